"""A temperature sweep of xpsoftmax.softmax over a small vector.

Drawn by the plot directive when the docs are built (``docs/numerics.md``)."""

import matplotlib.pyplot as plt
import numpy as np

import xpsoftmax as xs

x = np.array([2.0, 1.0, 0.5, -1.0])
temps = np.logspace(-2, 2, 200)
p = np.stack([xs.softmax(x, temperature=t) for t in temps])
fig, ax = plt.subplots()
for i, v in enumerate(x):
    (line,) = ax.plot(temps, p[:, i], lw=2, label=f"x = {v:g}")
    ax.plot([temps[0] / 2], [xs.softmax(x, temperature=0)[i]], "<", color=line.get_color())
    ax.plot([temps[-1] * 2], [xs.softmax(x, temperature=np.inf)[i]], ">", color=line.get_color())
ax.set_xscale("log")
ax.set_xlabel("temperature T (markers: the exact values at T = 0 and T = inf)")
ax.set_ylabel("softmax(x, temperature=T)")
ax.set_ylim(-0.02, 1.02)
ax.legend(fontsize=8)
fig.tight_layout()
