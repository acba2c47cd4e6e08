"""`guide eject`: the plain PyTorch script a config means.

`script.eject` turns a config into one standalone Python file that trains the same run
with torch, torchvision, numpy and pillow. The parts: `plan` (what the config and its
data decide, and how the script names a component), `model` (guide's networks as their
source, collected by `source`; torchvision's by their call; yours from your file),
`data` (datasets, transforms, sampler, collate function, loaders), `loop` (loss,
optimizer, scheduler and the train/validate loop), `blocks` (the fixed text of those
parts) and `layout` (short lines).
"""
