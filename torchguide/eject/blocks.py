"""The fixed parts of an ejected script, as text: data readers, datasets, samplers, helpers.

Each is plain Python that must give the very batches guide gives (the same file order,
split, batch order and random stream), so the losses match; tests/test_eject.py holds
them to that. `$name` marks a value the script fills in (string.Template).
"""

from __future__ import annotations

IMAGE_FILES = '''
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
# torchvision 0.29 marks its image decoders deprecated (for torchcodec) on every call; they still decode fine
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision")


def is_image(path):
    return path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def load_image(path, mode):
    """Decode an image file to a uint8 tensor (C, H, W), grayscale (mode L) or RGB."""
    if path.lower().endswith((".png", ".jpg", ".jpeg")):
        return decode_image(path, mode=ImageReadMode.GRAY if mode == "L" else ImageReadMode.RGB)
    with Image.open(path) as image:  # other formats through PIL
        return pil_to_tensor(image.convert(mode))


class ImageFiles(Dataset):
    """(path, class index) samples; an item is the decoded image through `transform`, and its label."""

    def __init__(self, samples, mode, transform):
        self.samples, self.mode, self.transform = samples, mode, transform

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        path, label = self.samples[index]
        return self.transform(load_image(path, self.mode)), label
'''

FIND_IMAGE_FOLDER = '''

def find_images(root):
    """(path, class index) of every image under root/<class>/, in path order, and the class names, sorted."""
    folders = sorted(p for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith("."))
    files = sorted((p, label) for label, folder in enumerate(folders) for p in folder.rglob("*") if is_image(p))
    return [(str(p), label) for p, label in files], [folder.name for folder in folders]
'''

FIND_IMAGE_GLOB = '''

def find_images(root, pattern):
    """(path, class index) of the images that match `pattern` under root, the class being the image's folder."""
    files = sorted((p, p.parent.name) for p in Path(root).glob(pattern) if is_image(p))
    classes = sorted({name for _, name in files})
    return [(str(p), classes.index(name)) for p, name in files], classes
'''

FIND_IMAGE_CSV = '''

def find_images(csv_file, root=None, path_column="path", label_column="label"):
    """(path, class index) of the images a CSV lists (paths relative to `root`, by default the CSV's folder)."""
    base = Path(root) if root else Path(csv_file).parent
    with open(csv_file, encoding="utf-8-sig", newline="") as f:
        rows = [(base / row[path_column], row[label_column].strip()) for row in csv.DictReader(f)]
    files = sorted((p, name) for p, name in rows if is_image(p))
    classes = sorted({name for _, name in files})
    return [(str(p), classes.index(name)) for p, name in files], classes
'''

DATASET_IMAGES = '''

def dataset_samples(dataset):
    """(item index, label) for every item of a dataset: the labels from its `targets` list when it has one."""
    targets = getattr(dataset, "targets", None)
    if targets is None or len(targets) != len(dataset):
        targets = [dataset[i][1] for i in range(len(dataset))]
    return [(i, int(label)) for i, label in enumerate(targets)]


class DatasetImages(Dataset):
    """The images of your dataset as uint8 or float tensors (C, H, W), through `transform`, with their labels."""

    def __init__(self, dataset, samples, mode, transform):
        self.dataset, self.samples, self.mode, self.transform = dataset, samples, mode, transform

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        item, label = self.samples[index]
        image = self.dataset[item][0]
        if isinstance(image, Image.Image):  # a PIL image becomes a uint8 tensor in the run's mode
            image = pil_to_tensor(image if image.mode == self.mode else image.convert(self.mode))
        return self.transform(image), label
'''

SEEDED_ITEMS = '''
    def __getitems__(self, indices):
        """A batch of items; in a loader worker, the batch's own seed drives its random transforms."""
        if get_worker_info() is not None:
            torch.manual_seed(indices.seed)
        return [self[i] for i in indices]
'''

READ_TEXTS = '''

def read_texts(path, text="text", label="label"):
    """Texts and their labels (as strings) from a .csv, .tsv or .jsonl file with those columns."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        if path.endswith(".jsonl"):
            rows = [json.loads(line) for line in f if line.strip()]
        else:
            rows = list(csv.DictReader(f, delimiter="\\t" if path.endswith((".tsv", ".tab")) else ","))
    return [str(row[text]) for row in rows], [str(row[label]).strip() for row in rows]
'''

READ_TOKEN_IDS = '''

def read_token_ids(path):
    """Token id sequences and their labels from a .jsonl file ({"ids": [...], "label": ...} a line) or an
    .npz file (`ids` flat, `offsets` where each sequence starts, `labels`)."""
    if path.endswith(".npz"):
        with np.load(path) as npz:
            flat, offsets, labels = torch.from_numpy(npz["ids"]).long(), npz["offsets"], npz["labels"]
        bounds = [*offsets.tolist(), len(flat)]
        return [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:])], [str(x) for x in labels.tolist()]
    with open(path, encoding="utf-8-sig") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [torch.tensor(row["ids"], dtype=torch.long) for row in rows], [str(row["label"]) for row in rows]
'''

RANDOM_SEQUENCES = '''

def random_sequences(size, min_len, max_len, vocab_size, num_classes, seed):
    """The guide's experiment: `size` sequences of random length in [min_len, max_len] over token ids
    1..vocab_size-1 (0 is padding), with random labels; their own generator makes them the same every time."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min_len, max_len + 1, (size,), generator=generator).tolist()
    ids = [torch.randint(1, vocab_size, (n,), generator=generator) for n in lengths]
    labels = [str(x) for x in torch.randint(0, num_classes, (size,), generator=generator).tolist()]
    return ids, labels
'''

TEXTS = '''

class Texts(Dataset):
    """Token id sequences (1-d int64 tensors) with their class indices."""

    def __init__(self, ids, labels):
        self.ids, self.labels = ids, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return self.ids[index], self.labels[index]

    @property
    def lengths(self):
        return [len(x) for x in self.ids]
'''

RELABEL = '''

def relabel(samples, names, classes):
    """Samples of another split labelled by the training classes (`names`: that split's class names)."""
    return [(item, classes.index(names[label])) for item, label in samples]
'''

ENCODE = '''

def encode(texts, labels, vocab, classes):
    """A split as Texts: each text as token ids (MAX_LEN at most), each label as its class index."""
    return Texts([torch.tensor(vocab.encode(text, MAX_LEN), dtype=torch.long) for text in texts],
                 [classes.index(label) for label in labels])
'''

STRATIFIED_SPLIT = '''

def stratified_split(labels, fraction, seed):
    """(train, valid) indices: `fraction` of each class (drawn with `seed`) to validation, in item order."""
    generator = torch.Generator().manual_seed(seed)
    by_class = {}
    for i, label in enumerate(labels):
        by_class.setdefault(label, []).append(i)
    train, valid = [], []
    for label in sorted(by_class):
        indices = by_class[label]
        order = torch.randperm(len(indices), generator=generator).tolist()
        n_valid = round(len(indices) * fraction) if len(indices) > 1 else 0
        valid += [indices[j] for j in order[:n_valid]]
        train += [indices[j] for j in order[n_valid:]]
    return sorted(train), sorted(valid)
'''

CUT = '''

def cut(order, batch_size, drop_last=False):
    """Cut an order of indices into batches; a short last batch is dropped (drop_last), or joins the
    batch before when it holds one sample (batch norm cannot train on one)."""
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if batches and len(batches[-1]) < batch_size:
        if drop_last:
            batches.pop()
        elif len(batches[-1]) < 2 and len(batches) > 1:
            batches[-2] += batches.pop()
    return batches
'''

SEEDED_BATCH = '''

class SeededBatch(list):
    """A batch of indices with its own seed: a loader worker seeds the batch's random transforms with it,
    so they do not depend on which worker loads which batch."""

    def __init__(self, indices, seed):
        super().__init__(indices)
        self.seed = seed
'''

RANDOM_BATCHES = '''

class RandomBatches(Sampler):
    """Batches of a new random order every epoch (file order without `shuffle`). The order of epoch e
    comes from its own generator, seeded with (seed, e): it does not depend on what ran before."""

    def __init__(self, size, batch_size, seed, shuffle=True, drop_last=False):
        self.size, self.batch_size, self.seed, self.shuffle, self.drop_last = size, batch_size, seed, shuffle, drop_last
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def batches(self):
        if not self.shuffle:
            return cut(list(range(self.size)), self.batch_size, self.drop_last)
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return cut(torch.randperm(self.size, generator=generator).tolist(), self.batch_size, self.drop_last)
$iter
    def __len__(self):
        return len(cut(list(range(self.size)), self.batch_size, self.drop_last))
'''

SORTED_BATCHES = '''

class SortedBatches(RandomBatches):
    """The guide's sort-once batches: sorted by length, the same batches in the same order every epoch."""

    def __init__(self, lengths, batch_size, seed, drop_last=False):
        super().__init__(len(lengths), batch_size, seed, shuffle=False, drop_last=drop_last)
        self.lengths = torch.as_tensor(lengths)

    def batches(self):
        return cut(torch.argsort(self.lengths, stable=True).tolist(), self.batch_size, self.drop_last)
'''

LENGTH_BUCKETS = '''

class LengthBuckets(RandomBatches):
    """Tight batches that change every epoch: shuffle, cut into buckets of `bucket_size` samples, sort
    each bucket by length, cut it into batches, shuffle the batches. Without `shuffle` (validation):
    buckets in item order, batches in order."""

    def __init__(self, lengths, batch_size, seed, shuffle=True, drop_last=False, bucket_size=None):
        super().__init__(len(lengths), batch_size, seed, shuffle, drop_last)
        self.lengths = torch.as_tensor(lengths)
        self.bucket_size = bucket_size or batch_size * 50

    def batches(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator) if self.shuffle else torch.arange(self.size)
        bucket = max(self.batch_size, self.bucket_size // self.batch_size * self.batch_size)  # whole batches
        by_length = []
        for chunk in order.split(bucket):
            by_length += chunk[torch.argsort(self.lengths[chunk], stable=True)].tolist()
        batches = cut(by_length, self.batch_size, self.drop_last)
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
        return batches
'''

PLAIN_ITER = '''
    def __iter__(self):
        return iter(self.batches())
'''

SEEDED_ITER = '''
    def __iter__(self):  # each batch with its seed, from (seed, epoch, batch number)
        base = (self.seed * 100_003 + self.epoch) * 1_000_003 * 1_009
        for k, batch in enumerate(self.batches()):
            yield SeededBatch(batch, (base + k * 1_009) % (1 << 63))
'''

MAKE_LOADER = '''

def make_loader(dataset, sampler, collate_fn):
    """A DataLoader that takes its batches of indices from `sampler` and turns each into a batch with
    `collate_fn`. Its own generator (it seeds loader workers) leaves the global random stream to the
    transforms and dropout."""
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_fn, num_workers=NUM_WORKERS,
                      pin_memory=DEVICE.type == "cuda", persistent_workers=NUM_WORKERS > 0,
                      generator=torch.Generator().manual_seed(SEED))
'''

MIX = '''

def mix(images, labels):
    """MixUp or CutMix on a training batch (data.batch_transforms): one draw picks at most one of MIXES
    by its share p; the target becomes class probabilities."""
    draw = float(torch.rand(()))
    for transform, p in MIXES:
        if draw < p:
            return transform(images, labels)
        draw -= p
    return images, labels
'''

FREEZE = '''

def freeze(model, patterns):
    """model.freeze: the parameters whose names match a pattern stop training; a BatchNorm frozen whole
    becomes a FrozenBatchNorm2d, which keeps its running statistics."""
    for name, param in model.named_parameters():
        if any(fnmatchcase(name, pattern) for pattern in patterns):
            param.requires_grad_(False)
    fix_frozen_batchnorms(model)
'''

PARAM_GROUPS = '''

def param_groups(model, groups, no_decay_norm_bias=False):
    """The optimizer's parameter groups: the trainable parameters no pattern of `groups` takes, with the
    optimizer's own options, then one group per (patterns, options) entry; with `no_decay_norm_bias`
    each is split in two, the 1-d parameters (biases, norm weights) with weight_decay 0."""
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    owner = {}
    for i, (patterns, _) in enumerate(groups):
        for pattern in patterns:
            owner.update({name: i for name, _ in trainable if fnmatchcase(name, pattern) and name not in owner})
    buckets = [({}, [p for name, p in trainable if name not in owner])]
    buckets += [(options, [p for name, p in trainable if owner.get(name) == i])
                for i, (_, options) in enumerate(groups)]
    result = []
    for options, params in buckets:
        if no_decay_norm_bias:
            result += [{"params": [p for p in params if p.ndim > 1], **options},
                       {"params": [p for p in params if p.ndim <= 1], **options, "weight_decay": 0.0}]
        else:
            result.append({"params": params, **options})
    return [group for group in result if group["params"]]
'''

LOAD_MATCHING = '''

def load_matching(model, state):
    """Load the tensors of `state` whose name and shape fit the model; the others (a classifier head
    for another number of classes) keep their fresh initialisation."""
    own = model.state_dict()
    model.load_state_dict({k: v for k, v in state.items() if k in own and own[k].shape == v.shape}, strict=False)
'''

USER_CODE = '''

class Registry:
    """A stand-in for guide's registries: `register` gives back what it decorates."""

    def register(self, name, obj=None, **meta):
        return obj if obj is not None else lambda target: target


# Your files register their components with guide (`@MODELS.register(...)`); this stand-in for
# torchguide.registry lets them load without guide.
sys.modules["torchguide"] = types.ModuleType("torchguide")
sys.modules["torchguide"].registry = sys.modules["torchguide.registry"] = types.ModuleType("torchguide.registry")
for kind in ("MODELS", "DATASETS", "TRANSFORMS", "BATCH_TRANSFORMS", "COLLATES", "SAMPLERS", "LOSSES",
             "OPTIMIZERS", "SCHEDULERS", "LAYERS"):
    setattr(sys.modules["torchguide.registry"], kind, Registry())


def load_file(path):
    """Import a .py file as a module."""
    spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

'''
