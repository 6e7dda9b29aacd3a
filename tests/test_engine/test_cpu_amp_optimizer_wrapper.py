"""CPUAmpOptimWrapper (bfloat16 autocast on CPU) and ``enable_amp`` (``tools/train.py --amp``)."""
import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.optim import OptimWrapper, build_optim_wrapper
from mmengine.registry import DefaultScope

import mmseg_ris  # noqa: F401  (registers the wrapper)
from mmseg_ris.engine import CPUAmpOptimWrapper
from mmseg_ris.utils import enable_amp


def _build(model, cfg):
    """Build as the runner does: in the configs' default scope, mmseg."""
    with DefaultScope.overwrite_default_scope('mmseg'):
        return build_optim_wrapper(model, cfg)


def _linear(seed=0):
    torch.manual_seed(seed)
    return nn.Linear(8, 3)


def test_builds_from_config_and_autocasts_only_inside_context():
    model = _linear()
    wrapper = _build(
        model, dict(type='CPUAmpOptimWrapper', optimizer=dict(type='SGD', lr=0.1)))
    assert isinstance(wrapper, CPUAmpOptimWrapper)
    x = torch.randn(4, 8)
    with wrapper.optim_context(model):
        assert torch.is_autocast_enabled('cpu')
        assert model(x).dtype == torch.bfloat16
    assert not torch.is_autocast_enabled('cpu')
    assert model(x).dtype == torch.float32


def test_step_uses_the_bfloat16_forward_and_keeps_float32_weights():
    """One SGD step equals the step computed from an explicit bfloat16 forward."""
    x = torch.randn(5, 8)
    target = torch.randn(5, 3)
    lr = 0.1

    # Reference: weights and input rounded to bfloat16, product in bfloat16, loss in float32.
    ref = _linear()
    w = ref.weight.detach().clone().requires_grad_()
    b = ref.bias.detach().clone().requires_grad_()
    out = torch.nn.functional.linear(x.bfloat16(), w.bfloat16(), b.bfloat16())
    loss = (out.float() - target).pow(2).mean()
    loss.backward()
    want_w, want_b = w.detach() - lr * w.grad, b.detach() - lr * b.grad

    model = _linear()
    wrapper = CPUAmpOptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=lr))
    with wrapper.optim_context(model):
        loss = (model(x).float() - target).pow(2).mean()
    wrapper.update_params(loss)
    assert model.weight.dtype == torch.float32
    torch.testing.assert_close(model.weight.detach(), want_w, rtol=0, atol=1e-6)
    torch.testing.assert_close(model.bias.detach(), want_b, rtol=0, atol=1e-6)

    # and it is not the float32 step: bfloat16 rounding changes the gradient
    fp32 = _linear()
    loss = (fp32(x) - target).pow(2).mean()
    loss.backward()
    assert not torch.allclose(fp32.weight.detach() - lr * fp32.weight.grad, want_w, rtol=0,
                              atol=1e-6)


def test_state_dict_round_trip_like_optim_wrapper():
    model = _linear()
    wrapper = CPUAmpOptimWrapper(optimizer=torch.optim.AdamW(model.parameters(), lr=1e-3))
    with wrapper.optim_context(model):
        loss = model(torch.randn(2, 8)).float().sum()
    wrapper.update_params(loss)
    state = wrapper.state_dict()
    other = CPUAmpOptimWrapper(optimizer=torch.optim.AdamW(_linear().parameters(), lr=1e-3))
    other.load_state_dict(state)
    assert other.state_dict()['state'][0]['exp_avg'].equal(state['state'][0]['exp_avg'])


@pytest.mark.parametrize('dtype', ['float16', torch.float16, 'float32', 'int8'])
def test_rejects_other_dtypes(dtype):
    with pytest.raises(ValueError, match='dtype'):
        CPUAmpOptimWrapper(dtype=dtype, optimizer=torch.optim.SGD(_linear().parameters(), lr=0.1))


def test_accepts_torch_bfloat16():
    wrapper = CPUAmpOptimWrapper(dtype=torch.bfloat16,
                                 optimizer=torch.optim.SGD(_linear().parameters(), lr=0.1))
    assert wrapper.cast_dtype is torch.bfloat16


def _cfg(**wrapper):
    return Config(dict(optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-3), **wrapper)))


def test_enable_amp_picks_the_wrapper_for_the_device():
    cpu = _cfg(type='OptimWrapper')
    enable_amp(cpu, cuda=False)
    assert cpu.optim_wrapper.type == 'CPUAmpOptimWrapper' and 'loss_scale' not in cpu.optim_wrapper
    assert isinstance(_build(_linear(), cpu.optim_wrapper), CPUAmpOptimWrapper)

    gpu = _cfg()  # no type: mmengine's default OptimWrapper
    enable_amp(gpu, cuda=True)
    assert gpu.optim_wrapper.type == 'AmpOptimWrapper'
    assert gpu.optim_wrapper.loss_scale == 'dynamic'


@pytest.mark.parametrize('kind', ['AmpOptimWrapper', 'CPUAmpOptimWrapper'])
def test_enable_amp_leaves_an_amp_config_alone(kind):
    cfg = _cfg(type=kind)
    enable_amp(cfg, cuda=False)
    assert cfg.optim_wrapper.type == kind


def test_enable_amp_rejects_custom_wrappers():
    with pytest.raises(ValueError, match='MyWrapper'):
        enable_amp(_cfg(type='MyWrapper'), cuda=False)
    assert issubclass(CPUAmpOptimWrapper, OptimWrapper)
