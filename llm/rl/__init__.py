"""Reinforcement learning on verifiable rewards (GRPO): tasks with verifiers, and rewards."""
