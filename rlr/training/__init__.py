"""Training: the run kit every command shares, and the training commands built from it.

Run kit: configs, loading, batching, generation, evaluation, fit, step, checkpoint,
metrics, preemption, ppo_core, ppo_build. Commands (leaves: none imports another): sft
(`rlr sft`), reward_model (`rlr train-prm` / `train-orm`), ppo (`rlr ppo`), labelling
(`rlr label-steps`), bon (`rlr eval-bon`). docs/design.md maps what lives where.
"""
