"""Coverage-guided fuzzing with atheris (libFuzzer) of the readers, the shard reader and the config
loader: the same property as tests/test_fuzz.py (no exception other than ours), guided by coverage
of our code instead of random mutation. Optional (``pip install atheris``); run by ``make fuzz``:

    python tests/atheris_fuzz.py TARGET [RUNS]      # TARGET: depth-<encoding> | image | shard | config | all

Prints ``atheris TARGET: N runs, no failure``; a failure prints the input and exits non-zero
(libFuzzer also writes it to ``crash-<sha1>``).
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import atheris

from bridgedepth.config import ConfigError, load_config  # noqa: E402
from bridgedepth.data.shards import IndexedShard, iter_shard  # noqa: E402
from bridgedepth.errors import BridgeError  # noqa: E402
from bridgedepth.io import ENCODINGS, get_codec, read_image  # noqa: E402


def _instrument_ours() -> None:
    """Coverage instrumentation of our modules only (instrumenting NumPy / Pillow is slow and noisy)."""
    for name, mod in list(sys.modules.items()):
        if name.startswith("bridgedepth") and mod is not None:
            for obj in list(vars(mod).values()):
                if callable(obj) and getattr(obj, "__module__", "") == name:
                    try:
                        atheris.instrument_func(obj)
                    except Exception:  # noqa: BLE001 - builtins, classes without code
                        pass

OURS = (BridgeError, ConfigError)
TMP = Path(tempfile.mkdtemp(prefix="bridge-atheris-"))
PARAMS = {"pfm-disparity": {"focal": 700.0, "baseline": 0.5}, "png-disparity-kitti": {"focal": 700.0, "baseline": 0.5},
          "eth3d-raw": {"shape": "24x32"}, "hypersim-hdf5": {"focal": 400.0}}


def depth_target(enc: str):
    codec = get_codec(enc)

    path = TMP / f"fuzz.{enc}"  # the EXR and HDF5 libraries open the file by name

    def one(data: bytes) -> None:
        path.write_bytes(data)
        try:
            codec.decode(str(path), data, dict(PARAMS.get(enc, {})))
        except OURS:
            pass
    return one


def image_one(data: bytes) -> None:
    p = TMP / "fuzz.img"
    p.write_bytes(data)
    try:
        read_image(p)
    except OURS:
        pass


def shard_one(data: bytes) -> None:
    p = TMP / "shard-000000.tar"
    p.write_bytes(data)
    try:
        for _ in iter_shard(p):
            pass
        with IndexedShard(p) as sh:
            for i in range(len(sh)):
                sh.sample(i)
    except OURS:
        pass


def config_one(data: bytes) -> None:
    p = TMP / "fuzz.yaml"
    p.write_bytes(data)
    try:
        load_config(p)
    except OURS:
        pass


def _seed_corpus(target: str) -> Path:
    """The seeds of tests/test_fuzz.py (real fixtures, files from our writers) as a libFuzzer corpus:
    without them the fuzzer rarely gets past a file's magic bytes."""
    sys.path.insert(0, str(Path(__file__).parent))
    import test_fuzz as tf

    if target.startswith("depth-"):
        seeds = tf.DEPTH_SEEDS.get(target[len("depth-"):], ([], {}))[0]
    else:
        seeds = {"image": tf._image_seeds, "shard": lambda: tf.SHARD_SEEDS,
                 "config": lambda: [b"base: tiny\ntrain:\n  lr: 1e-4\n  steps: 3\nseed: 1\n"]}[target]()
    d = TMP / f"corpus-{target}"
    d.mkdir(exist_ok=True)
    for i, data in enumerate(seeds):
        (d / f"seed{i}").write_bytes(data)
    return d


def targets() -> dict:
    t = {f"depth-{e}": depth_target(e) for e in ENCODINGS}
    t.update(image=image_one, shard=shard_one, config=config_one)
    return t


def main() -> int:
    names = targets()
    target = sys.argv[1] if len(sys.argv) > 1 else "all"
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    if target == "all":  # one process per target (libFuzzer runs one target per process)
        import subprocess

        total = 0
        for name in names:
            r = subprocess.run([sys.executable, __file__, name, str(runs)], capture_output=True, text=True)
            if r.returncode != 0:
                print(r.stdout[-3000:], r.stderr[-3000:], sep="\n")
                print(f"atheris {name}: FAILED")
                return 1
            total += runs
            print(f"atheris {name}: {runs} runs, no failure", flush=True)
        print(f"atheris: {total} runs over {len(names)} targets, no failure")
        return 0
    if target not in names:
        print(f"unknown target {target!r}; one of: all, {', '.join(names)}")
        return 2
    fn = names[target]
    corpus = _seed_corpus(target)
    _instrument_ours()
    argv = [sys.argv[0], f"-runs={runs}", "-max_len=262144", "-timeout=10", "-rss_limit_mb=3000",
            f"-artifact_prefix={os.getcwd()}/", str(corpus)]
    atheris.Setup(argv, fn)
    atheris.Fuzz()  # exits the process when the runs are done
    return 0


if __name__ == "__main__":
    sys.exit(main())
