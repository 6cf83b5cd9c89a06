import subprocess
import sys
import textwrap

import jax
import pytest

from rlr import sharding

pytestmark = pytest.mark.sharding


def test_make_mesh_fills_one_axis_and_validates():
    mesh = sharding.make_mesh(data=-1)
    assert mesh.axis_names == ("data", "fsdp", "tensor")
    assert mesh.devices.size == len(jax.devices())
    with pytest.raises(ValueError, match="at most one mesh axis may be -1"):
        sharding.make_mesh(data=-1, fsdp=-1)
    with pytest.raises(ValueError, match="needs 2 devices"):
        sharding.make_mesh(data=2, fsdp=1, tensor=1)


def test_rules_cover_every_parameter_axis_name():
    names = {name for name, _ in sharding.LOGICAL_AXIS_RULES}
    assert {"batch", "vocab", "embed", "mlp", "heads", "kv_heads", "norm"} <= names


EIGHT_DEVICES = textwrap.dedent(
    """
    import os
    os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=8"  # after the suite's
    os.environ["JAX_PLATFORMS"] = "cpu"
    import flax.linen as nn, jax, jax.numpy as jnp, numpy as np, optax
    from rlr import sharding

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x):
            init = nn.initializers.normal(0.1)
            w1 = self.param("w1", nn.with_logical_partitioning(init, ("embed", "mlp")), (16, 32))
            w2 = self.param("w2", nn.with_logical_partitioning(init, ("mlp", "embed")), (32, 16))
            return jnp.tanh(x @ w1) @ w2

    model, tx = MLP(), optax.adamw(1e-2)
    x = jax.random.normal(jax.random.key(1), (16, 16))

    def init_fn(key):
        return model.init(key, x)

    def step(params, opt_state, x):
        loss, grads = jax.value_and_grad(lambda p: jnp.mean(model.apply(p, x) ** 2))(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    ref_params = nn.unbox(init_fn(jax.random.key(0)))
    ref_out = jax.jit(step)(ref_params, tx.init(ref_params), x)

    for shape in [dict(data=8), dict(data=1, fsdp=4, tensor=2), dict(data=2, fsdp=2, tensor=2)]:
        mesh = sharding.make_mesh(**shape)
        params, shardings = sharding.sharded_init(init_fn, mesh, jax.random.key(0))
        w1 = params["params"]["w1"]
        assert w1.sharding.spec == jax.sharding.PartitionSpec("fsdp", "tensor"), w1.sharding
        opt_shardings = sharding.optimizer_shardings(tx, params, shardings, mesh)
        opt_state = jax.jit(tx.init, out_shardings=opt_shardings)(params)
        xs = jax.device_put(x, sharding.batch_sharding(mesh))
        sharded_step = jax.jit(
            step,
            in_shardings=(shardings, opt_shardings, sharding.batch_sharding(mesh)),
            out_shardings=(shardings, opt_shardings, sharding.replicated(mesh)),
            donate_argnums=(0, 1),
        )
        out = sharded_step(params, opt_state, xs)
        for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(ref_out)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
        print("ok", shape)
    """
)


def test_sharded_step_matches_unsharded_on_eight_fake_devices():
    proc = subprocess.run(
        [sys.executable, "-c", EIGHT_DEVICES], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("ok") == 3, proc.stdout
