"""Training throughput: our dataset + collator + Trainer vs a Trainer on pre-decoded tensors.

Fine-tuning decodes every video in DataLoader workers and builds its inputs through the
chat template on the fly. That must never be what the GPUs wait for. This measures, in
one run and for the same tiny model, data and settings:

- ``ours``: ``llava_star.stages.train.run`` (frames decoded and tokenized in the workers,
  padded per batch by the collator);
- ``pre-decoded``: a plain ``transformers.Trainer`` over the same examples decoded and
  padded beforehand, held in memory (no decoding, no collation work).

    python benchmarks/train.py [--videos 32] [--steps 30] [--batch-size 4] [--workers 2] [--repeats 1]

Prints samples/s of both and their ratio (target >= 0.8). On a tiny CPU model the step
itself is cheap, so this is the hard case for the data path; with a 7B model on a GPU
the step is far longer and the same workers have far more time.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from llava_star.datasets.synthetic import make_synthetic_dataset
from llava_star.models.tiny import build_tiny_model
from llava_star.records import read_samples
from llava_star.stages.train import TrainConfig, run
from llava_star.training.trainer import build_training_arguments


def write_training_json(dataset_root: Path, samples_path: Path, out: Path) -> Path:
    records = [
        {
            "id": sample.id,
            "video": sample.video,
            "conversations": [
                {"from": "human", "value": "<video>\n" + sample.question},
                {"from": "gpt", "value": f"The {sample.task.replace('_', ' ')} is {sample.labels[0].value}."},
            ],
        }
        for sample in read_samples(samples_path)
        if sample.labels[0].type == "class"
    ]
    out.write_text(json.dumps(records))
    return out


def pre_decoded_samples_per_second(config: TrainConfig) -> float:
    """The same model and arguments, trained by a plain Trainer on in-memory padded tensors."""
    import torch
    from transformers import Trainer, default_data_collator

    from llava_star.models.loading import load_model
    from llava_star.training.data import ConversationDataset, ExampleSettings
    from llava_star.training.data_lists import load_records
    from llava_star.training.parts import set_trainable

    loaded = load_model(config.model, dtype="float32", device="cpu")
    set_trainable(loaded.model, config)
    settings = ExampleSettings(config.video_root, config.num_frames, config.model_max_length)
    source = ConversationDataset(load_records(config.data), loaded.processor, settings)
    examples = [source.encode(index) for index in range(len(source))]
    length = max(len(example["input_ids"]) for example in examples)
    pad_id = loaded.processor.tokenizer.pad_token_id or 0
    padding = {"input_ids": pad_id, "labels": -100, "attention_mask": 0}

    def padded(example: dict) -> dict:
        out = {
            key: torch.nn.functional.pad(example[key], (0, length - len(example[key])), value=value)
            for key, value in padding.items()
        }
        out["pixel_values_videos"] = example["pixel_values_videos"][0]
        return out

    tensors = [padded(example) for example in examples]
    arguments = build_training_arguments(config)
    arguments.dataloader_num_workers = 0
    trainer = Trainer(model=loaded.model, args=arguments, train_dataset=tensors, data_collator=default_data_collator)
    return float(trainer.train().metrics["train_samples_per_second"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=32, help="synthetic videos to make")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of our pipeline")
    parser.add_argument("--family", default="video_llava")
    parser.add_argument("--repeats", type=int, default=1, help="alternate the two runs this often; best of each")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        dataset = make_synthetic_dataset(root / "synthetic", num_videos=args.videos, seed=0)
        data = write_training_json(dataset.root, dataset.samples, root / "train.json")
        model = build_tiny_model(args.family, root / "model")
        common = {
            "model": str(model),
            "data": (str(data),),
            "video_root": str(dataset.root),
            "max_steps": args.steps,
            "per_device_train_batch_size": args.batch_size,
            "learning_rate": 1e-4,
            "warmup_ratio": 0.0,
            "logging_steps": 10,
        }
        baseline, ours_rate = 0.0, 0.0
        for _ in range(args.repeats):  # alternating evens out a machine whose load changes
            baseline = max(
                baseline,
                pre_decoded_samples_per_second(
                    TrainConfig(output_dir=str(root / "baseline"), dataloader_num_workers=0, **common)
                ),
            )
            ours = run(TrainConfig(output_dir=str(root / "ours"), dataloader_num_workers=args.workers, **common))
            ours_rate = max(ours_rate, float(ours["train_samples_per_second"]))
    print(
        f"model: tiny {args.family}, batch {args.batch_size}, {args.steps} steps, {args.workers} workers, "
        f"best of {args.repeats}"
    )
    print(f"ours (decode + chat template in workers, collate): {ours_rate:8.2f} samples/s")
    print(f"plain Trainer on pre-decoded, pre-padded tensors:  {baseline:8.2f} samples/s")
    print(f"ratio: {ours_rate / baseline:.2f} (target >= 0.8)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
