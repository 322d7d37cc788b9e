"""Diffusion policy: noise schedule and samplers, denoiser networks, the policy itself."""
