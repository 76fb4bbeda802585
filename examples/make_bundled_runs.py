"""Make the bundled example runs (examples/runs/): small trainings by the real writers, seeded, on CPU.

    python examples/make_bundled_runs.py            # rewrites examples/runs/ (a few minutes on 2 cores)
    python examples/make_bundled_runs.py --out DIR  # somewhere else

Every run here is made by this project, so its logs can ship with it (third-party logs stay in the
team's shared corpus, ../shared/). Each training has little data and many epochs, so it overfits:
the eval curve falls, turns and rises, and stopping rules disagree on where to stop - which is
what `logsage replay examples/runs/*` shows. Only the logs are kept (no weights):

* ``hf-qwen2-tiny-lr*/trainer_state.json``: Hugging Face ``Trainer`` (full fine-tune of the tiny
  local Qwen2 that `logsage.train.tiny` builds; no download) on 20 instructions from
  examples/data, evaluated every 5 steps on 8 others (``trainer.save_state()`` writes the file);
* ``tb-mlp-*/events.out.tfevents.*``: torch's ``SummaryWriter`` logging ``train/loss`` and
  ``eval/loss`` (every 10th epoch) of a small MLP regression on 32 noisy points, 600 epochs;
* ``lightning-mlp/version_0/metrics.csv``: Lightning's ``CSVLogger`` (``val_loss`` per epoch,
  ``train_loss_step``/``train_loss_epoch``) for the same kind of model.

Needs the train extra (torch, transformers) and pytorch-lightning.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
SEED = 0


def _records(path: Path) -> list[str]:
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            out.append(f"{r['instruction']}\n{r['input']}\nThe answer is {r['output']}")
    return out


def hf_runs(out: Path, learning_rates=(1e-3, 3e-3, 1e-2), epochs: int = 30) -> list[Path]:
    """Full fine-tunes of the tiny Qwen2 with HF Trainer; each writes trainer_state.json."""
    import torch
    from transformers import (AutoModelForCausalLM, AutoTokenizer, DataCollatorForLanguageModeling, Trainer,
                              TrainingArguments, set_seed)

    from logsage.train.tiny import build_tiny_model

    torch.set_num_threads(1)
    made = []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny_model(Path(tmp) / "tiny-qwen2", seed=SEED)
        tok = AutoTokenizer.from_pretrained(model_dir)
        train = [tok(t) for t in _records(DATA / "tiny_alpaca.jsonl")]
        evals = [tok(t) for t in _records(DATA / "tiny_alpaca_eval.jsonl")]
        collate = DataCollatorForLanguageModeling(tok, mlm=False)
        for lr in learning_rates:
            run = out / f"hf-qwen2-tiny-lr{lr:g}"
            set_seed(SEED)
            model = AutoModelForCausalLM.from_pretrained(model_dir)
            args = TrainingArguments(
                output_dir=str(Path(tmp) / run.name), num_train_epochs=epochs, per_device_train_batch_size=4,
                per_device_eval_batch_size=8, learning_rate=lr, warmup_steps=0, lr_scheduler_type="constant",
                eval_strategy="steps", eval_steps=5, logging_steps=5, save_strategy="no", report_to="none",
                seed=SEED, data_seed=SEED, use_cpu=True, dataloader_num_workers=0, disable_tqdm=True)
            trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=evals, data_collator=collate)
            trainer.train()
            run.mkdir(parents=True, exist_ok=True)
            trainer.state.save_to_json(str(run / "trainer_state.json"))
            made.append(run)
    return made


def _regression_data(seed: int):
    """32 noisy training points of a smooth curve and 64 held-out ones: a big MLP overfits the 32."""
    import torch

    g = torch.Generator().manual_seed(seed)
    x = torch.rand(96, 1, generator=g) * 6 - 3
    y = torch.sin(x) + 0.3 * torch.randn(96, 1, generator=g)
    return (x[:32], y[:32]), (x[32:], torch.sin(x[32:]))


def _mlp(seed: int, width: int = 128):
    import torch

    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(1, width), torch.nn.Tanh(), torch.nn.Linear(width, width),
                               torch.nn.Tanh(), torch.nn.Linear(width, 1))


def tensorboard_runs(out: Path, seeds=(1, 2), epochs: int = 600) -> list[Path]:
    """An MLP regression per seed, logged with torch.utils.tensorboard.SummaryWriter each epoch."""
    import torch
    from torch.utils.tensorboard import SummaryWriter

    made = []
    for seed in seeds:
        run = out / f"tb-mlp-seed{seed}"
        (xt, yt), (xv, yv) = _regression_data(seed)
        model = _mlp(seed)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        writer = SummaryWriter(log_dir=str(run))
        for epoch in range(1, epochs + 1):
            model.train()
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(xt), yt)
            loss.backward()
            opt.step()
            writer.add_scalar("train/loss", loss.item(), epoch)
            if epoch % 10 == 0:
                model.eval()
                with torch.no_grad():
                    writer.add_scalar("eval/loss", torch.nn.functional.mse_loss(model(xv), yv).item(), epoch)
        writer.close()
        made.append(run)
    return made


def lightning_run(out: Path, seed: int = 3, epochs: int = 40) -> Path:
    """The same regression as a LightningModule, logged with Lightning's CSVLogger."""
    import pytorch_lightning as pl
    import torch
    from pytorch_lightning.loggers import CSVLogger

    class Regressor(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = _mlp(seed)

        def training_step(self, batch, _):
            loss = torch.nn.functional.mse_loss(self.net(batch[0]), batch[1])
            self.log("train_loss", loss, on_step=True, on_epoch=True)
            return loss

        def validation_step(self, batch, _):
            self.log("val_loss", torch.nn.functional.mse_loss(self.net(batch[0]), batch[1]))

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-2)

    pl.seed_everything(seed, verbose=False)
    (xt, yt), (xv, yv) = _regression_data(seed)
    train = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xt, yt), batch_size=8, shuffle=True)
    val = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xv, yv), batch_size=64)
    run = out / "lightning-mlp"
    trainer = pl.Trainer(max_epochs=epochs, logger=CSVLogger(str(out), name="lightning-mlp", version=0),
                         log_every_n_steps=1, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu", devices=1, deterministic=True)
    trainer.fit(Regressor(), train, val)
    (run / "version_0" / "hparams.yaml").unlink(missing_ok=True)  # empty: the model takes no hyper-parameters
    return run


def _own_runs(out: Path) -> list[Path]:
    return sorted(p for pattern in ("hf-qwen2-tiny-lr*", "tb-mlp-seed*", "lightning-mlp") for p in out.glob(pattern)
                  if p.is_dir())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=HERE / "runs", help="where the runs go (default: examples/runs)")
    ap.add_argument("--quick", action="store_true", help="fewer epochs and one run per writer (a smoke test)")
    args = ap.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    for old in _own_runs(out):  # only the runs this script writes are replaced; nothing else is touched
        shutil.rmtree(old)
    if args.quick:
        runs = hf_runs(out, learning_rates=(3e-3,), epochs=2) + tensorboard_runs(out, seeds=(1,), epochs=20) + \
            [lightning_run(out, epochs=3)]
    else:
        runs = hf_runs(out) + tensorboard_runs(out) + [lightning_run(out)]
    for run in runs:
        print(run)


if __name__ == "__main__":
    main()
