"""rlr: PPO for LLM math reasoning with step-level process rewards, Clip and Delta."""

__version__ = "0.1.0"
