"""Markov chain Monte Carlo for +-1 models (chapters 5-6): samplers as
``SamplingAlgorithm(init, step)``, replica exchange as a meta-kernel, AIS, diagnostics.

Each sampler has a state and an info NamedTuple, a factory returning the
``SamplingAlgorithm`` and its init as a function: ``metropolis`` (``SpinState`` or
``MetropolisState``, ``MetropolisInfo``, ``metropolis_init``), ``heat_bath`` (``SpinState``,
``HeatBathInfo``, ``heat_bath_init``), ``rbm_gibbs`` (``RBMState``, ``RBMInfo``,
``rbm_gibbs_init``), ``replica_exchange`` (``ReplicaExchangeState``, ``ReplicaExchangeInfo``,
``replica_exchange_init``). ``algorithm.init(position, key=None)`` needs the key only for
``rbm_gibbs`` (and replica exchange over it)."""

from jaxebm.mcmc.ais import AISResult, ais_log_partition
from jaxebm.mcmc.base import SamplingAlgorithm, run_chain, run_chains, trace_positions
from jaxebm.mcmc.diagnostics import autocorrelation, effective_sample_size, integrated_autocorr_time, r_hat
from jaxebm.mcmc.gibbs import HeatBathInfo, RBMInfo, RBMState, heat_bath, heat_bath_init, rbm_gibbs, rbm_gibbs_init
from jaxebm.mcmc.learning import PCDInfo, pcd_fit_ising
from jaxebm.mcmc.metropolis import MetropolisInfo, MetropolisState, SpinState, metropolis, metropolis_init
from jaxebm.mcmc.tempering import (
    ReplicaExchangeInfo,
    ReplicaExchangeState,
    adapt_ladder,
    geometric_ladder,
    replica_exchange,
    replica_exchange_init,
    tune_ladder,
)

__all__ = [
    "AISResult",
    "HeatBathInfo",
    "MetropolisInfo",
    "MetropolisState",
    "PCDInfo",
    "RBMInfo",
    "RBMState",
    "ReplicaExchangeInfo",
    "ReplicaExchangeState",
    "SamplingAlgorithm",
    "SpinState",
    "adapt_ladder",
    "ais_log_partition",
    "autocorrelation",
    "effective_sample_size",
    "geometric_ladder",
    "heat_bath",
    "heat_bath_init",
    "integrated_autocorr_time",
    "metropolis",
    "metropolis_init",
    "pcd_fit_ising",
    "r_hat",
    "rbm_gibbs",
    "rbm_gibbs_init",
    "replica_exchange",
    "replica_exchange_init",
    "run_chain",
    "run_chains",
    "trace_positions",
    "tune_ladder",
]
