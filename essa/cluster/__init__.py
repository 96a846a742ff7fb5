"""Cluster launch: hyperparameter sweeps as SLURM array jobs, and the batch-script helpers.

    sweep.py    a sweep file (base config + grid + fixed overrides) -> ordered cells
    job.py      what one batch job runs: run directory, resume or not, the essa-train arguments
    slurm.py    the sbatch command line of a sweep's array job
    summary.py  one table (markdown / CSV) over the run directories of every cell
    cli.py      ``essa sweep plan|cell|sbatch|summary``

The batch scripts themselves live in ``launch/slurm/``; see docs/cluster.md.
"""

from essa.cluster.sweep import Cell, Sweep, SweepError, load_sweep

__all__ = ["Cell", "Sweep", "SweepError", "load_sweep"]
