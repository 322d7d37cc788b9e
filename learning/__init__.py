"""Learning: diffusion policies, pre-training, PPO/DPPO, controller training, evaluation, export."""
