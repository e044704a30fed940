"""Generate storyboard/data/clip_tokenizer/ from OpenAI CLIP's BPE list, once, offline.

SD1.x uses OpenAI CLIP's tokenizer. open-clip-torch ships its BPE list as
``bpe_simple_vocab_16e6.txt.gz``; transformers' CLIPTokenizer wants ``vocab.json`` + ``merges.txt``.
Both are a deterministic rewrite of the same list (the order below is the one OpenAI's
SimpleTokenizer builds its encoder in, so the ids match):

1. the 256 byte-to-unicode symbols, 2. the same symbols with ``</w>``, 3. one entry per merge (the
first 48894 lines after the header), 4. ``<|startoftext|>`` and ``<|endoftext|>`` -> 49408 entries.

Usage (the wheel is only unpacked, never installed)::

    pip download --no-deps open-clip-torch -d /tmp/oc && cd /tmp/oc && unzip -o *.whl 'open_clip/*.gz'
    python tools/make_clip_tokenizer.py /tmp/oc/open_clip/bpe_simple_vocab_16e6.txt.gz
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

OUT_DIR = Path(__file__).resolve().parent.parent / "storyboard" / "data" / "clip_tokenizer"
N_MERGES = 49152 - 256 - 2  # what OpenAI's SimpleTokenizer keeps


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte table: printable bytes map to themselves, the rest to code points from 256."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, codes, strict=True)}


def build(bpe_gz: Path) -> tuple[dict[str, int], list[str]]:
    with gzip.open(bpe_gz, "rt", encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    merges = lines[1 : N_MERGES + 1]  # line 0 is the "#version" header
    symbols = list(bytes_to_unicode().values())
    vocab_list = symbols + [s + "</w>" for s in symbols]
    vocab_list += ["".join(m.split()) for m in merges]
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(vocab_list)}
    if len(vocab) != 49408:
        raise SystemExit(f"expected 49408 vocabulary entries, got {len(vocab)}")
    return vocab, merges


def write(out_dir: Path, vocab: dict[str, int], merges: list[str]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    special = {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
    }
    config = {
        **special,
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "do_lower_case": True,
        "errors": "replace",
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": True,
    }
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n", encoding="utf-8")
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("bpe_gz", type=Path, help="path to bpe_simple_vocab_16e6.txt.gz")
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args()
    vocab, merges = build(args.bpe_gz)
    write(args.out, vocab, merges)
    print(f"wrote {len(vocab)} tokens and {len(merges)} merges to {args.out}")


if __name__ == "__main__":
    main()
