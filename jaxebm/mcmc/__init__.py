"""Markov chain Monte Carlo for +-1 models (chapters 5-6): samplers as
``SamplingAlgorithm(init, step)``, replica exchange as a meta-kernel, AIS, diagnostics."""

from jaxebm.mcmc.ais import AISResult, ais_log_partition
from jaxebm.mcmc.base import SamplingAlgorithm, run_chain, run_chains
from jaxebm.mcmc.diagnostics import autocorrelation, effective_sample_size, integrated_autocorr_time, r_hat
from jaxebm.mcmc.gibbs import RBMState, heat_bath, rbm_gibbs
from jaxebm.mcmc.learning import pcd_fit_ising
from jaxebm.mcmc.metropolis import SpinInfo, SpinState, metropolis
from jaxebm.mcmc.tempering import (
    ReplicaExchangeInfo,
    ReplicaExchangeState,
    adapt_ladder,
    geometric_ladder,
    replica_exchange,
    tune_ladder,
)

__all__ = [
    "AISResult",
    "RBMState",
    "ReplicaExchangeInfo",
    "ReplicaExchangeState",
    "SamplingAlgorithm",
    "SpinInfo",
    "SpinState",
    "adapt_ladder",
    "ais_log_partition",
    "autocorrelation",
    "effective_sample_size",
    "geometric_ladder",
    "heat_bath",
    "integrated_autocorr_time",
    "metropolis",
    "pcd_fit_ising",
    "r_hat",
    "rbm_gibbs",
    "replica_exchange",
    "run_chain",
    "run_chains",
    "tune_ladder",
]
