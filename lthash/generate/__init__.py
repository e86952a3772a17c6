"""Text-to-image models: the tiny base, personalisation (AttnDreamBooth, DreamBooth, Textual Inversion) and synthesis."""
