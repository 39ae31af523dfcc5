"""The naive softmax formula against xpsoftmax.softmax as the logits grow.

Drawn by the plot directive when the docs are built (``docs/numerics.md``)."""

import matplotlib.pyplot as plt
import numpy as np

import xpsoftmax as xs

s = np.logspace(0, 3.5, 400)
logits = s[:, None] - np.array([0.0, 1.0, 2.0])
fig, ax = plt.subplots()
for dtype, style in ((np.float64, "-"), (np.float32, "--")):
    x = logits.astype(dtype)
    with np.errstate(all="ignore"):
        naive = np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)
    ax.plot(s, naive[:, 0], style, lw=2.5, label=f"exp(x) / sum(exp(x)), {np.dtype(dtype).name}")
ax.plot(
    s,
    xs.softmax(logits.astype(np.float32))[:, 0],
    "k:",
    lw=2,
    label="xpsoftmax.softmax, float32 and float64",
)
for limit, dtype in (
    (np.log(np.finfo(np.float32).max), "float32"),
    (np.log(np.finfo(np.float64).max), "float64"),
):
    ax.axvline(limit, color="grey", lw=0.8)
    ax.annotate(
        f"exp overflows in {dtype}",
        (limit, 0.2),
        rotation=90,
        ha="right",
        va="bottom",
        fontsize=8,
        color="grey",
    )
ax.set_xscale("log")
ax.set_ylim(0, 1)
ax.set_xlabel("s (logits are s, s - 1, s - 2)")
ax.set_ylabel("first probability")
ax.legend(loc="lower left", fontsize=8)
fig.tight_layout()
