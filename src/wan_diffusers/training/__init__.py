"""Fine-tuning Wan DiTs (LoRA or full, with accelerate), and the procedural shapes data and tiny model trained with it.

- `trainer.train(TrainingConfig(...))` / `wan-diffusers train`: the trainer (`trainer.py`, `data.py`, `objective.py`,
  `lora.py`, `command.py`);
- `shapes`: moving-shapes clips with captions, and `describe_video`, which reads colour, shape and motion back;
- `tiny`, `vae`: the tiny shapes model's components and the VAE training loop;
- `evaluation`: prompt-following accuracy of a pipeline on the shapes grammar.

Nothing here is imported by `import wan_diffusers`.
"""
