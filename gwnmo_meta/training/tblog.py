"""TensorBoard logging of a meta-training run (scalars, histograms, hparams)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summary

if TYPE_CHECKING:
    from gwnmo_meta.config import RunConfig
    from gwnmo_meta.evaluation.evaluate import EvalSummary
    from gwnmo_meta.training.inner_loops import EpisodeOutcome


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def summary_writer(logdir: Path, purge_step: int | None = None) -> SummaryWriter:
    """A ``SummaryWriter`` whose background thread drops events, silently, once the run folder is
    gone (deleted under the run): the run itself stops at its next step with one error line
    (``RunLock.verify``) instead of the thread printing a traceback. The events file is appended
    to by path, so nothing is written to a folder of the same name made meanwhile either way
    beyond the events already queued."""
    writer = SummaryWriter(log_dir=str(logdir), purge_step=purge_step)
    events = getattr(writer._get_file_writer().event_writer, "_general_file_writer", None)
    write = getattr(events, "write", None)
    if events is not None and write is not None:  # tensorboard's file object (private: if present)

        def write_if_there(data: bytes) -> None:
            try:
                write(data)
            except FileNotFoundError:
                pass

        events.write = write_if_there
    return writer


class RunLogger:
    """Thin wrapper around ``SummaryWriter`` with the tags gwnmo-meta documents (see README)."""

    def __init__(self, logdir: Path, purge_step: int | None = None) -> None:
        self.writer = summary_writer(logdir, purge_step)

    def train_step(
        self,
        step: int,
        outcomes: Sequence[EpisodeOutcome],
        meta_loss: float,
        tasks_per_s: float,
        inner_lr: float | dict[str, float],
        meta_opt: torch.optim.Optimizer | None,
    ) -> dict[str, float]:
        """Log one meta-step; return the scalars as a dict (kept in the run history).

        ``inner_lr``: α, or ``MetaMethod.inner_lr()``'s dict (``{"": α}`` or one α per tensor of
        the target, logged as ``lr/inner/<tensor>`` with their mean as ``lr/inner``).
        """
        w = self.writer
        record: dict[str, float] = {"step": float(step), "meta_loss": meta_loss}
        record["train_accuracy"] = _mean([float(o.query_acc) for o in outcomes])
        record["train_query_loss"] = _mean([float(o.query_loss) for o in outcomes])
        w.add_scalar("meta-train/loss", meta_loss, step)
        w.add_scalar("meta-train/accuracy", record["train_accuracy"], step)
        w.add_scalar("meta-train/query_loss", record["train_query_loss"], step)
        inner = [o.inner_losses for o in outcomes if o.inner_losses]
        for i in range(min((len(x) for x in inner), default=0)):
            w.add_scalar(f"inner/loss_step{i}", _mean([x[i] for x in inner]), step)
        keys = sorted({k for o in outcomes for k in o.stats})
        for key in keys:
            w.add_scalar(
                f"gwnmo/{key}", _mean([o.stats[key] for o in outcomes if key in o.stats]), step
            )
        if meta_opt is not None:
            w.add_scalar("lr/meta", meta_opt.param_groups[0]["lr"], step)
        lrs = inner_lr if isinstance(inner_lr, dict) else {"": inner_lr}
        # α as resolved, or as learned (--learn-lr); Meta-SGD: its initial value
        w.add_scalar("lr/inner", _mean(list(lrs.values())), step)
        for name, value in lrs.items():
            if name:
                w.add_scalar(f"lr/inner/{name}", value, step)
        w.add_scalar("speed/tasks_per_s", tasks_per_s, step)
        return record

    def histograms(
        self, step: int, method: torch.nn.Module, outcomes: Sequence[EpisodeOutcome]
    ) -> None:
        """Histograms of the meta-parameters and, when the method exposes them, of the weights h."""
        for name, p in method.named_parameters():
            if p.numel() > 1:
                self.writer.add_histogram(f"params/{name}", p.detach().float().cpu(), step)
        hs = [o.weights for o in outcomes if o.weights is not None]
        if hs:
            self.writer.add_histogram(
                "gwnmo/h", torch.cat([h.reshape(-1).float().cpu() for h in hs]), step
            )

    def validation(self, step: int, summary: EvalSummary) -> None:
        w = self.writer
        w.add_scalar("meta-val/accuracy", summary.accuracy.mean, step)
        w.add_scalar("meta-val/accuracy_ci95", summary.accuracy.ci95, step)
        w.add_scalar("meta-val/loss", summary.loss.mean, step)

    def hparams(self, cfg: RunConfig, best_acc: float | None, last_val: EvalSummary | None) -> None:
        """The hparams summary linking the config to final metrics, in the same event file."""
        hp = {
            k: (v if isinstance(v, (int, float, str, bool)) else str(v))
            for k, v in cfg.to_dict().items()
        }
        metrics = {"hparam/best_val_accuracy": float("nan") if best_acc is None else best_acc}
        if last_val is not None:
            metrics["hparam/final_val_accuracy"] = last_val.accuracy.mean
            metrics["hparam/final_val_loss"] = last_val.loss.mean
        exp, ssi, sei = hparams_summary(hp, metrics)
        fw = self.writer._get_file_writer()
        for summ in (exp, ssi, sei):
            fw.add_summary(summ)
        for k, v in metrics.items():
            self.writer.add_scalar(k, v)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()
