"""Package-internal pieces of exact enumeration; the public face is :mod:`jaxebm.enumeration`.

* :mod:`~jaxebm._enum.codes`: integer codes -> {-1, +1} spins;
* :mod:`~jaxebm._enum.budget`: time estimates, per-backend budgets, refusal;
* :mod:`~jaxebm._enum.fold`: the streaming log-sum-exp fold over chunks and its sharding;
* :mod:`~jaxebm._enum.generic`: the engine for any ``log_weight_fn``;
* :mod:`~jaxebm._enum.split`: the split (matmul) engine: its plan, and pairwise models;
* :mod:`~jaxebm._enum.bipartite`: the split engine for RBMs (one layer enumerated, the
  other summed analytically).
"""
