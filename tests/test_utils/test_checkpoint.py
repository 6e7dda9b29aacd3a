"""mmengine checkpoints load with torch.load(weights_only=True) once mmseg_ris is imported."""
import io
import os

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer, MessageHub

import mmseg_ris  # noqa: F401  (allow-lists the checkpoint classes)


def _checkpoint_like() -> dict:
    hub = MessageHub.get_instance('test_checkpoint_hub')
    for value in (0.5, 1.5, 2.5):
        hub.update_scalar('train/loss', value)
    hub.update_scalar('train/lr', np.float64(1e-4))
    hub.update_info('iter', 3)
    hub.update_info('seed', np.int64(7))
    return dict(meta=dict(epoch=1, iter=3, seed=np.int64(7), dataset_meta=dict(classes=('bg', 'obj'))),
                message_hub=hub.state_dict(),
                state_dict={'conv.weight': torch.arange(6.).view(2, 3)},
                optimizer={'state': {}, 'param_groups': [{'lr': 1e-4, 'params': [0]}]})


def test_mmengine_checkpoint_loads_weights_only():
    buf = io.BytesIO()
    torch.save(_checkpoint_like(), buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=True)
    loss = loaded['message_hub']['log_scalars']['train/loss']
    assert isinstance(loss, HistoryBuffer)
    # statistics still work after loading: mean of 0.5, 1.5, 2.5 and the latest value
    assert loss.mean() == pytest.approx(1.5)
    assert loss.current() == pytest.approx(2.5)
    assert loaded['meta']['seed'] == 7
    assert torch.equal(loaded['state_dict']['conv.weight'], torch.arange(6.).view(2, 3))


class _Payload:
    """Runs a command when unpickled without restrictions."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}',))


def test_code_in_checkpoint_is_refused(tmp_path):
    marker = tmp_path / 'ran'
    buf = io.BytesIO()
    torch.save({'state_dict': {}, 'evil': _Payload(str(marker))}, buf)
    buf.seek(0)
    with pytest.raises(Exception, match='(?i)weights'):
        torch.load(buf)  # torch 2.13 default: weights_only=True
    assert not marker.exists()
    # getattr stays off the allow-list: it would let a pickle reach any attribute
    assert getattr not in torch.serialization.get_safe_globals()
