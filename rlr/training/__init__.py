"""Training loops (SFT, reward models, PPO) and the pieces they share."""
