"""`LogsageEarlyStopping` in a real (pytorch_)lightning Trainer: the stop equals Lightning's own EarlyStopping
for `lightning:` rules, and `logsage replay` on the metrics.csv the run wrote, also after a resume."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pl = pytest.importorskip("pytorch_lightning")
torch = pytest.importorskip("torch")

REPO = Path(__file__).resolve().parents[2]


class Regression(pl.LightningModule):
    """A linear model on noisy data: the validation loss falls, then rises as it overfits the small set."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(8, 1)

    def training_step(self, batch, _):
        x, y = batch
        loss = ((self.lin(x).squeeze(-1) - y) ** 2).mean()
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, _):
        x, y = batch
        self.log("val_loss", ((self.lin(x).squeeze(-1) - y) ** 2).mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


def _data():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(8, generator=g)
    x, xv = torch.randn(24, 8, generator=g), torch.randn(64, 8, generator=g)
    y, yv = x @ w + 1.5 * torch.randn(24, generator=g), xv @ w + 1.5 * torch.randn(64, generator=g)
    ds = torch.utils.data.TensorDataset
    return (torch.utils.data.DataLoader(ds(x, y), batch_size=8),
            torch.utils.data.DataLoader(ds(xv, yv), batch_size=64))


def _fit(root, callbacks, *, max_epochs=60, version=0, ckpt_path=None, checkpoints=None):
    from pytorch_lightning.loggers import CSVLogger

    torch.manual_seed(0)
    extra = [checkpoints] if checkpoints else []
    trainer = pl.Trainer(max_epochs=max_epochs, logger=CSVLogger(str(root), name="run", version=version),
                         callbacks=[*callbacks, *extra], enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=bool(checkpoints), log_every_n_steps=1, accelerator="cpu",
                         deterministic=True)
    train, val = _data()
    trainer.fit(Regression(), train, val, ckpt_path=ckpt_path)
    return trainer


def _replay(path, rule):
    proc = subprocess.run([sys.executable, "-m", "logsage", "replay", str(path), "--rule", rule, "--metric",
                           "val_loss", "--json"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (d,) = json.loads(proc.stdout)["decisions"]
    return d


@pytest.mark.parametrize("patience", [1, 3])
def test_lightning_rule_stops_where_lightning_does_and_where_replay_does(tmp_path, patience):
    from pytorch_lightning.callbacks import EarlyStopping

    from logsage.integrations.lightning import LogsageEarlyStopping

    ours = LogsageEarlyStopping(f"lightning:patience={patience}", monitor="val_loss")
    t_ours = _fit(tmp_path / "ours", [ours])
    theirs = EarlyStopping(monitor="val_loss", patience=patience)
    t_theirs = _fit(tmp_path / "theirs", [theirs])
    assert theirs.stopped_epoch > 0, "Lightning never stopped: the test data must overfit"
    assert ours.stopped is not None and ours.stopped["epoch"] == theirs.stopped_epoch
    assert t_ours.global_step == t_theirs.global_step
    d = _replay(tmp_path / "ours" / "run" / "version_0" / "metrics.csv", f"lightning:patience={patience}")
    assert d["stop_step"] == ours.stopped["step"] and d["stop_eval_index"] == ours.stopped["eval_index"]


def test_another_rule_stops_where_replay_does(tmp_path):
    from logsage.integrations.lightning import LogsageEarlyStopping

    rule = "hf:patience=2,threshold=0.01"
    ours = LogsageEarlyStopping(rule, monitor="val_loss")
    _fit(tmp_path, [ours])
    assert ours.stopped is not None
    assert _replay(tmp_path / "run" / "version_0" / "metrics.csv", rule)["stop_step"] == ours.stopped["step"]


def test_the_rule_state_survives_a_resume_from_a_checkpoint(tmp_path):
    from pytorch_lightning.callbacks import ModelCheckpoint

    from logsage.integrations.lightning import LogsageEarlyStopping

    rule = "lightning:patience=3"
    whole = LogsageEarlyStopping(rule, monitor="val_loss")
    _fit(tmp_path / "whole", [whole])
    stop_epoch = whole.stopped["epoch"]
    assert stop_epoch >= 3
    ckpts = tmp_path / "ckpt"
    # interrupted two epochs before the stop: two validations without gain are already counted
    first = LogsageEarlyStopping(rule, monitor="val_loss")
    _fit(tmp_path / "resumed", [first], max_epochs=stop_epoch - 1,
         checkpoints=ModelCheckpoint(dirpath=str(ckpts), save_last=True, save_top_k=0))
    assert first.stopped is None
    again = LogsageEarlyStopping(rule, monitor="val_loss")
    _fit(tmp_path / "resumed", [again], version=1, ckpt_path=str(ckpts / "last.ckpt"),
         checkpoints=ModelCheckpoint(dirpath=str(ckpts), save_last=True, save_top_k=0))
    assert again.stopped is not None and again.stopped["epoch"] == stop_epoch  # a fresh counter stops later
    assert len(again.steps) == stop_epoch + 1  # the restored history plus the resumed validations
    assert _replay(tmp_path / "resumed" / "run", rule)["stop_step"] == again.stopped["step"]


def test_strict_names_the_logged_metrics(tmp_path):
    from logsage.core.errors import MetricNotFound
    from logsage.integrations.lightning import LogsageEarlyStopping

    with pytest.raises(MetricNotFound, match=r"no 'val_los' .*val_loss.*did you mean 'val_loss'"):
        _fit(tmp_path, [LogsageEarlyStopping("lightning", monitor="val_los")])
