"""Train the toy IOI model: ``mi-cluster train-toy`` or ``python -m mi_cluster.models.toy.train``.

A GPT-2-format, attention-only transformer (MLP weights zeroed and frozen, so
``hook_mlp_out`` is exactly 0) trained on the corpus of :mod:`mi_cluster.models.toy.data` with
the loss on the IOI answer weighted 5x. One CPU thread and a fixed seed give the same
weights on every run.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mi_cluster.core.ioi_prompts import IOIPrompt
from mi_cluster.core.outputs import check_output_dir, fresh_path, install_dir
from mi_cluster.models.toy.data import eval_examples, training_sequences, vocabulary

COMMAND = "mi-cluster train-toy"


@dataclass(frozen=True)
class TrainConfig:
    """Architecture and optimisation of the toy model."""

    n_layers: int = 3
    n_heads: int = 4
    d_model: int = 128
    n_ctx: int = 64
    steps: int = 3000
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 200
    weight_decay: float = 0.01
    answer_weight: float = 5.0
    seed: int = 0
    threads: int = 1

    def __post_init__(self) -> None:
        counts = ("n_layers", "n_heads", "d_model", "n_ctx", "steps", "batch_size", "threads")
        bad = [f"{k}={getattr(self, k)!r}" for k in counts if not _positive_int(getattr(self, k))]
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            bad.append(f"seed={self.seed!r}")
        if bad:
            raise ValueError(f"the toy model's settings must be positive integers: {bad}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not a multiple of n_heads {self.n_heads}")
        if self.warmup >= self.steps:
            raise ValueError(f"steps ({self.steps}) must exceed the warmup ({self.warmup})")


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def build_model(cfg: TrainConfig, vocab_size: int, bos_id: int):
    """The toy model: GPT-2's architecture, attention only (every MLP fixed at zero)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    hf_cfg = GPT2Config(
        vocab_size=vocab_size,
        n_positions=cfg.n_ctx,
        n_embd=cfg.d_model,
        n_layer=cfg.n_layers,
        n_head=cfg.n_heads,
        n_inner=4,  # the MLPs are zeroed and frozen: keep them tiny
        bos_token_id=bos_id,
        eos_token_id=bos_id,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        tie_word_embeddings=True,
    )
    model = GPT2LMHeadModel(hf_cfg)
    for name, p in model.named_parameters():
        if ".mlp." in name:  # attention-only: every block's MLP fixed at zero
            p.data.zero_()
            p.requires_grad_(False)
    return model


def encode(tokenizer, text: str, bos_id: int) -> list[int]:
    """A text's token ids, BOS first."""
    return [bos_id] + tokenizer(text, add_special_tokens=False)["input_ids"]


def ioi_accuracy(model, tokenizer, examples: list[IOIPrompt], bos_id: int) -> tuple[float, float]:
    """(accuracy: IO logit > S logit at the end, mean logit difference IO - S)."""
    model.eval()
    ids = [encode(tokenizer, ex.text, bos_id) for ex in examples]
    width = max(len(i) for i in ids)
    toks = torch.full((len(ids), width), bos_id)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for b, i in enumerate(ids):
        toks[b, : len(i)], mask[b, : len(i)] = torch.tensor(i), 1
    with torch.no_grad():
        logits = model(input_ids=toks, attention_mask=mask).logits
    last = torch.tensor([len(i) - 1 for i in ids])
    end = logits[torch.arange(len(ids)), last]
    io = torch.tensor([tokenizer.convert_tokens_to_ids(ex.io) for ex in examples])
    s = torch.tensor([tokenizer.convert_tokens_to_ids(ex.s) for ex in examples])
    diff = end.gather(1, io[:, None]) - end.gather(1, s[:, None])
    model.train()
    return float((diff > 0).float().mean()), float(diff.mean())


def _log(line: str) -> None:
    print(line, flush=True)


def train(
    cfg: TrainConfig, out_dir: Path, log: Callable[[str], None] = _log, force: bool = False
) -> dict:
    """Train and write ``out_dir`` (model, tokenizer, ``training.json``); return metrics.

    ``out_dir`` must be new, empty or an earlier output of this command (only its files
    are replaced); ``force`` allows any directory of the user's, still replacing only the
    files written here. The package's shipped model is never a target
    (:mod:`mi_cluster.core.outputs`)."""
    from mi_cluster.models.tiny import build_word_tokenizer

    out_dir = check_output_dir(out_dir, COMMAND, force)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    tmp = Path(tempfile.mkdtemp(prefix=".toy-ioi-", dir=out_dir.parent))
    try:
        tokenizer = build_word_tokenizer(tmp, vocabulary())
        bos = tokenizer.bos_token_id
        model = build_model(cfg, len(tokenizer), bos)
        data = _training_data(cfg, tokenizer, bos)
        params = [p for p in model.parameters() if p.requires_grad]
        opt, sched = _optimiser(cfg, params)
        evals = {k: eval_examples(k, n=300) for k in ("held_out_pairs", "held_out_templates")}
        start = time.perf_counter()
        model.train()
        for step in range(cfg.steps):
            toks, weight = _batch(data, step, cfg, bos)
            logits = model(input_ids=toks).logits[:, :-1]
            ce = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), toks[:, 1:].reshape(-1), reduction="none"
            ).view_as(weight)
            loss = (ce * weight).sum() / weight.sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            if (step + 1) % 250 == 0 or step + 1 == cfg.steps:
                acc = {k: ioi_accuracy(model, tokenizer, v, bos)[0] for k, v in evals.items()}
                log(
                    f"step {step + 1:>5}/{cfg.steps}  loss {loss.item():.3f}  "
                    f"acc pairs {acc['held_out_pairs']:.3f} "
                    f"templates {acc['held_out_templates']:.3f}  "
                    f"{time.perf_counter() - start:.0f}s"
                )
        seconds = time.perf_counter() - start
        model.eval()
        record = {
            "config": asdict(cfg),
            "train_seconds": round(seconds, 1),
            "metrics": _final_metrics(model, tokenizer, bos),
        }
        model.save_pretrained(str(tmp), safe_serialization=True)
        (tmp / "training.json").write_text(json.dumps(record, indent=2) + "\n")
        install_dir(tmp, out_dir, COMMAND)
        return record
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _training_data(cfg: TrainConfig, tokenizer: Any, bos: int) -> list[tuple[list[int], bool]]:
    """Every training sequence's ids (BOS first) and whether it ends in an IOI answer."""
    seqs = training_sequences(cfg.steps * cfg.batch_size, seed=cfg.seed)
    encoded = tokenizer([t + (f" {a}" if a else "") for t, a in seqs], add_special_tokens=False)
    return [
        ([bos] + ids, ans is not None)
        for ids, (_, ans) in zip(encoded["input_ids"], seqs, strict=True)
        if len(ids) + 1 <= cfg.n_ctx
    ]


def _optimiser(cfg: TrainConfig, params: list[torch.nn.Parameter]) -> tuple[Any, Any]:
    """AdamW with linear warm-up, then cosine decay to zero."""
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))

    def lr_at(step: int) -> float:
        if step < cfg.warmup:
            return (step + 1) / cfg.warmup
        return 0.5 * (1 + math.cos(math.pi * (step - cfg.warmup) / (cfg.steps - cfg.warmup)))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_at)


def _batch(
    data: list[tuple[list[int], bool]], step: int, cfg: TrainConfig, bos: int
) -> tuple[Tensor, Tensor]:
    """Step ``step``'s batch, padded with BOS, and each next-token loss's weight (0 on
    padding, ``answer_weight`` on an IOI answer)."""
    batch = data[(step * cfg.batch_size) % len(data) :][: cfg.batch_size]
    width = max(len(i) for i, _ in batch)
    toks = torch.full((len(batch), width), bos)
    weight = torch.zeros((len(batch), width - 1))
    for b, (ids, has_answer) in enumerate(batch):
        toks[b, : len(ids)] = torch.tensor(ids)
        weight[b, : len(ids) - 1] = 1.0
        if has_answer:
            weight[b, len(ids) - 2] = cfg.answer_weight
    return toks, weight


def _final_metrics(model: Any, tokenizer: Any, bos: int) -> dict[str, dict[str, float]]:
    """IOI accuracy and mean logit difference on each held-out evaluation set."""
    return {
        k: dict(
            zip(
                ("accuracy", "logit_diff"),
                ioi_accuracy(model, tokenizer, eval_examples(k), bos),
                strict=True,
            )
        )
        for k in ("held_out_pairs", "held_out_templates", "unseen_names")
    }


def main(argv: list[str] | None = None) -> int:
    """The ``mi-cluster train-toy`` command: train, then install into ``--out``."""
    parser = argparse.ArgumentParser(
        prog=COMMAND,
        description=(__doc__ or COMMAND).splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="output directory: new, empty or an earlier train-toy output (default: a new "
        "toy-ioi-trained[-N] in the current directory; the shipped model is read-only)",
    )
    parser.add_argument(
        "--force", action="store_true", help="write into a non-empty directory of yours"
    )
    parser.add_argument("--steps", type=int, default=TrainConfig.steps, help="optimiser steps")
    parser.add_argument("--seed", type=int, default=TrainConfig.seed, help="random seed")
    parser.add_argument("--layers", type=int, default=TrainConfig.n_layers, help="layers")
    parser.add_argument("--heads", type=int, default=TrainConfig.n_heads, help="heads per layer")
    parser.add_argument(
        "--threads", type=int, default=TrainConfig.threads, help="CPU threads (1: reproducible)"
    )
    args = parser.parse_args(argv)
    try:
        cfg = TrainConfig(
            steps=args.steps,
            seed=args.seed,
            n_layers=args.layers,
            n_heads=args.heads,
            threads=args.threads,
        )
    except ValueError as err:
        parser.error(str(err))
    out = args.out or fresh_path(Path.cwd() / "toy-ioi-trained")
    check_output_dir(out, COMMAND, args.force)
    record = train(cfg, out, force=args.force)
    print(f"wrote {out} in {record['train_seconds']} s: {record['metrics']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
