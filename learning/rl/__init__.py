"""Reinforcement learning: PPO maths shared by every method, the chunked rollout environment,
the fine-tuning methods (DPPO, MLP-FT, residual RL) and their training loop."""
