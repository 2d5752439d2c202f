"""The experiment side: finding lottery tickets by iterative magnitude pruning, as the
``sparse-tickets`` command (:mod:`sparse_tickets.cli`) runs it, built on the library around it
(the masked layers, ``optim``, ``pruning``, ``models``, ``data``), which never imports it.

One module per job; import them by name (this package imports none of them, so a command that
needs one module does not load the others):

- ``hparams``: every hyperparameter of a run, as a dataclass whose fields are the flags;
- ``presets``: the paper's networks and hyperparameters, by name;
- ``runs``: the run directory, where each artifact of a run lives;
- ``locking``: one command at a time in a run directory;
- ``train``: one training run of a masked model (a level, a control, an instability copy);
- ``levels``: training one level into its files, and the seeds it derives;
- ``imp``: the IMP loop with rewinding, and the control branches (``LotteryRun``);
- ``instability``: the linear-mode-connectivity analysis of a level;
- ``distributed``: the same loop under torchrun, rank 0 alone touching the run directory;
- ``export``: a level's ticket as one safetensors file, and loading it back;
- ``report``: tables and plots from run directories;
- ``datasets``: the data a run trains on, from its hyperparameters;
- ``session``: what the training commands share (checks, lock, progress, report), and the
  runs they start;
- ``trials``: replicates that differ in their seeds, as processes or a SLURM array;
- ``catalogue``: what the command line can name, as ``sparse-tickets list`` shows it.
"""
