"""Registered model builders: `image` (the guide's networks, a small CNN, torchvision
architectures) and `text` (BiLSTM, GRU, transformer encoder, embedding bag)."""
