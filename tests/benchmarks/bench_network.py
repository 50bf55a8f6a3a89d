"""Benchmark the network alone: Keras, tf2onnx's Loop graph and the fused LSTM/GRU graph, in one run.

    .venv/bin/python tests/benchmarks/bench_network.py artifacts/nsmc-morpheme-mecab artifacts/nsmc-word

For each bundle, both ONNX graphs are made afresh from its model.keras (so an older bundle
whose model.onnx is a Loop compares too) and checked against Keras. Input: the 50,000 NSMC
test reviews through the bundle's own preprocessing, as padded id rows. A fourth network, int8:
the fused graph with its LSTM weights in 8-bit integers (`--runtime onnx-int8`), approximate, so
its distance from the fused graph and both test accuracies are printed. Two feeds:
  ksent's   length-grouped batches of 256 without their all-padding columns (runtime.predict_ids,
            what `ksent predict` does);
  padded    batches of 256 in file order, padded to maxlen (what a plain ONNX client would feed).
Each figure is the median of --repeat runs, the networks interleaved run by run so that
machine noise hits them alike; the ratios are fused over Loop, fused over Keras and int8 over Loop.
Last, the padded feed's float32 arithmetic rate in the recurrent layers (kernel multiply-adds,
every step of every row) as a share of this machine's float32 matrix multiply: how much faster
an exact graph could still get.
Not a pytest test (the name does not start with test_): it needs trained bundles.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundles", type=Path, nargs="+", help="single-model bundle folders")
    parser.add_argument("--mirror", type=Path, default=REPO.parent / "shared" / "corpora",
                        help="folder holding nsmc/ratings_test.txt [default: %(default)s]")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    import numpy as np
    import onnx

    from pipeline.model import fused_onnx
    from pipeline.predict.loading import load_bundle
    from pipeline.predict.runtime import KerasNetwork, OnnxNetwork, _export_tf2onnx, export_int8, predict_ids

    rows = (args.mirror / "nsmc" / "ratings_test.txt").read_text(encoding="utf-8").splitlines()[1:]
    reviews = [row.split("\t")[1] for row in rows]
    y = np.array([int(row.split("\t")[2]) for row in rows])
    print(f"{len(reviews):,} NSMC test reviews; cpu cores {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}; "
          f"median of {args.repeat} interleaved runs")
    for directory in args.bundles:
        bundle = load_bundle(directory, runtime="keras")
        x = bundle.transform(reviews)
        keras_net = KerasNetwork(bundle.network.model)
        with tempfile.TemporaryDirectory() as tmp:
            expected = predict_ids(keras_net, x)
            _export_tf2onnx(keras_net.model, Path(tmp) / "loop.onnx", x[:5000], expected[:5000])
            onnx.save(fused_onnx.build(keras_net.model, padding=bundle.preprocessor.padding), f"{tmp}/fused.onnx")
            nets = {"keras": keras_net, "loop": OnnxNetwork(Path(tmp) / "loop.onnx"),
                    "fused": OnnxNetwork(Path(tmp) / "fused.onnx")}
            fused = predict_ids(nets["fused"], x)
            diff = float(np.abs(fused - expected).max())
            int8 = export_int8(Path(tmp) / "fused.onnx", Path(tmp) / "int8.onnx", x, fused, y)
            if "file" in int8:
                nets["int8"] = OnnxNetwork(Path(tmp) / "int8.onnx")
                int8_note = (f"; int8 vs fused: max |diff| {int8['max_abs_diff']:.1e}, test accuracy "
                             f"{int8['val_accuracy']:.4f} vs {int8['val_accuracy_exact']:.4f}, "
                             f"labels agree {int8['label_agreement']:.2%}")
            else:
                int8_note = f"; {int8['note']}"
            feeds = {
                "ksent's": lambda net, x=x: predict_ids(net, x),
                "padded": lambda net, x=x: [net(x[i:i + 256]) for i in range(0, len(x), 256)],
            }
            print(f"\n{directory.name} ({bundle.manifest['training']['params'].get('layers', 1)} layer(s), "
                  f"{'bidirectional' if bundle.manifest['training']['params'].get('bidirectional') else 'one-way'}, "
                  f"maxlen {bundle.preprocessor.maxlen}); fused vs Keras: max |diff| {diff:.1e}{int8_note}")
            for feed, run in feeds.items():
                seconds: dict[str, list[float]] = {name: [] for name in nets}
                for net in nets.values():
                    run(net)                                         # warm-up: Keras traces, onnxruntime plans
                for _ in range(args.repeat):
                    for name, net in nets.items():
                        started = time.perf_counter()
                        run(net)
                        seconds[name].append(time.perf_counter() - started)
                rate = {name: len(x) / statistics.median(s) for name, s in seconds.items()}
                print(f"  {feed:8s} " + "  ".join(f"{name} {r:8,.0f}/s" for name, r in rate.items())
                      + f"   fused/loop {rate['fused'] / rate['loop']:.2f}x, "
                        f"fused/keras {rate['fused'] / rate['keras']:.2f}x"
                      + (f", int8/loop {rate['int8'] / rate['loop']:.2f}x" if "int8" in rate else ""))
            # padded rows run every step: the recurrence's float32 arithmetic rate against the machine's
            flops = recurrent_flops_per_step(keras_net.model) * x.shape[1]
            fused_gflops, loop_gflops = (rate[name] * flops / 1e9 for name in ("fused", "loop"))
            peak = matmul_gflops()
            print(f"  padded, float32: fused {fused_gflops:.0f} GFLOP/s in the recurrent layers = "
                  f"{fused_gflops / peak:.0%} of this machine's matrix multiply (numpy 2048x2048: {peak:.0f} "
                  f"GFLOP/s); loop {loop_gflops:.0f} GFLOP/s, so 3x the loop would take {3 * loop_gflops / peak:.0%}")


def recurrent_flops_per_step(model) -> int:
    """Floating-point operations of one time step of one row in the recurrent layers (every direction):
    2 per multiply-add of the input and recurrent kernels; the gates' element-wise work is left out."""
    import numpy as np

    total = 0
    for layer in model.layers:
        for rnn in (layer.forward_layer, layer.backward_layer) if hasattr(layer, "forward_layer") else (layer,):
            cell = getattr(rnn, "cell", None)
            if cell is not None and hasattr(cell, "recurrent_kernel"):
                total += 2 * (int(np.prod(cell.kernel.shape)) + int(np.prod(cell.recurrent_kernel.shape)))
    return total


def matmul_gflops() -> float:
    """float32 matrix multiply of 2048x2048 matrices with all cores (numpy's BLAS), median of 5."""
    import numpy as np

    a = np.random.default_rng(0).random((2048, 2048), dtype=np.float32)
    a @ a
    runs = []
    for _ in range(5):
        started = time.perf_counter()
        a @ a
        runs.append(time.perf_counter() - started)
    return 2 * 2048 ** 3 / statistics.median(runs) / 1e9


if __name__ == "__main__":
    main()
