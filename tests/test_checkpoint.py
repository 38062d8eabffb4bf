"""The checkpoint layout: a state packed into one buffer per dtype and unpacked exactly; checkpoints of the earlier
per-array layout still restore."""

import os

import flax
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from ddpm_jax import checkpoint


@flax.struct.dataclass
class State:
    step: np.ndarray
    params: dict
    opt_state: tuple
    rng: np.ndarray
    extra: object = None


def make_state(seed: int = 0) -> State:
    r = np.random.default_rng(seed)
    return State(
        step=np.int32(7),
        params={"params": {"conv": {"kernel": r.normal(size=(3, 3, 1, 4)).astype(np.float32),
                                    "bias": r.normal(size=(4,)).astype(np.float32)},
                           "scale": np.float32(r.normal())}},
        opt_state=(np.int32(3), [r.normal(size=(5,)).astype(np.float32), r.normal(size=(2, 2)).astype(np.float64)]),
        rng=np.array([12, 34], np.uint32),
    )


def assert_same(a, b):
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    assert ta == tb
    for x, y in zip(la, lb):
        assert np.asarray(x).dtype == np.asarray(y).dtype and np.array_equal(x, y)


def test_pack_makes_one_buffer_per_dtype_and_unpack_inverts_it():
    state = make_state()
    buffers, layout = checkpoint.pack(state)
    assert sorted(buffers) == ["float32", "float64", "int32", "uint32"]
    assert all(b.ndim == 1 for b in buffers.values())
    assert buffers["float32"].size == 36 + 4 + 1 + 5 and buffers["int32"].tolist() == [7, 3]
    assert_same(checkpoint.unpack(buffers, layout, like=make_state(seed=1)), state)  # like: structure only
    tree = checkpoint.unpack(buffers, layout)  # no like: nested dicts of the path names
    np.testing.assert_array_equal(tree["params"]["params"]["conv"]["kernel"], state.params["params"]["conv"]["kernel"])
    np.testing.assert_array_equal(tree["opt_state"]["1"]["1"], state.opt_state[1][1])


def test_unpack_refuses_a_state_of_another_shape():
    buffers, layout = checkpoint.pack(make_state())
    other = make_state().replace(rng=np.zeros(4, np.uint32))
    with pytest.raises(ValueError, match=r"does not fit this state: its array .* 'shape': \[2\].*'shape': \[4\]"):
        checkpoint.unpack(buffers, layout, like=other)
    with pytest.raises(ValueError, match="does not fit this state: it holds 8 arrays; this state has 9"):
        checkpoint.unpack(buffers, layout, like=make_state().replace(extra=np.float32(1)))


def test_save_and_restore_round_trip(tmp_path):
    ckpt = checkpoint.Checkpointer(str(tmp_path))
    ckpt.save(5, make_state(), {"epoch": 1, "index": 9})
    ckpt.wait()
    assert {"data", "layout", "packed"} <= set(os.listdir(tmp_path / "5"))  # the three items
    state, data_state = ckpt.restore(make_state(seed=2))
    ckpt.close()
    assert_same(state, make_state())
    assert data_state == {"epoch": 1, "index": 9}


def test_a_checkpoint_of_the_per_array_layout_still_restores(tmp_path):
    """As checkpoints were written before the packed layout: the state pytree item by item."""
    directory = str(tmp_path / "checkpoints")
    manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(create=True))
    manager.save(3, args=ocp.args.Composite(state=ocp.args.StandardSave(make_state()),
                                            data=ocp.args.JsonSave({"epoch": 0, "index": 4})))
    manager.wait_until_finished()
    manager.close()
    ckpt = checkpoint.Checkpointer(directory)
    state, data_state = ckpt.restore(make_state(seed=3))
    ckpt.close()
    assert_same(state, make_state())
    assert data_state == {"epoch": 0, "index": 4}
    params, step = checkpoint.restore_params(str(tmp_path), ema=False)
    assert step == 3
    np.testing.assert_array_equal(params["params"]["conv"]["bias"], make_state().params["params"]["conv"]["bias"])
