"""Sample quality you can read: new images scored by a classifier of the data set's labels (the digits of MNIST),
in the spirit of the Inception score (Salimans et al. 2016), so that models and samplers compare on their
samples and not only on likelihood.

At the end of the test, `SampleScore` trains a small classifier (a one-hidden-layer MLP) on the training images
and their labels, in a random state of its own, measures its accuracy on a held-out tenth of them, draws
`n_samples` new images from the model's sampler and logs, from the classifier's class probabilities p(y|x):

- `test/sample_confidence`: the mean top probability, max_y p(y|x) (1: every sample looks like one class);
- `test/sample_class_entropy`: the entropy of the mean prediction p(y) in nats (log of the number of classes:
  every class drawn equally often);
- `test/sample_inception_score`: exp(E_x KL(p(y|x) || p(y))), from 1 (samples the classifier cannot tell apart)
  to the number of classes (each sample one class, all classes equally);
- `test/sample_classifier_accuracy`: the classifier's accuracy on its held-out images (how far to trust it).

Data without at least two labelled classes gets no score.
"""

from __future__ import annotations

import logging
import math

import torch
from lightning import Callback, LightningModule, Trainer
from torch import nn
from torch.nn import functional as F

from vae_lightning.core import checks
from vae_lightning.data.protocol import training_images

log = logging.getLogger(__name__)


def sample_scores(probabilities: torch.Tensor) -> dict[str, float]:
    """The scores of samples whose class probabilities are `probabilities` (N, classes), in nats."""
    p = probabilities.double().clamp_min(1e-12)
    marginal = p.mean(0)
    kl = (p * (p.log() - marginal.log())).sum(-1)
    return {
        "sample_confidence": float(p.max(-1).values.mean()),
        "sample_class_entropy": float(-(marginal * marginal.log()).sum()),
        "sample_inception_score": math.exp(float(kl.mean())),
    }


class SampleScore(Callback):
    """Trains the classifier (`hidden` units, `epochs` epochs of Adam at lr 1e-3, batches of 128, `seed`) on at
    most `max_images` training images, then scores `n_samples` samples (0: off)."""

    def __init__(
        self, n_samples: int = 1000, hidden: int = 256, epochs: int = 5, max_images: int = 20_000, seed: int = 0
    ) -> None:
        self.n_samples = checks.non_negative_int("n_samples", n_samples)
        self.hidden = checks.positive_int("hidden", hidden)
        self.epochs = checks.positive_int("epochs", epochs)
        self.max_images = checks.positive_int("max_images", max_images)
        self.seed = checks.non_negative_int("seed", seed)

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.n_samples or trainer.datamodule is None:
            return
        try:
            dataset = training_images(trainer)
        except ValueError as missing:
            log.warning("No sample score: %s", missing)
            return
        labels = getattr(dataset, "labels", None)
        if labels is None or len(labels[labels >= 0].unique()) < 2:
            return  # no two labelled classes (negative labels are unknown ones)
        with torch.random.fork_rng(devices=[]):  # the run's random state stays as it was
            torch.manual_seed(self.seed)
            with torch.inference_mode(False), torch.enable_grad():  # the test runs in inference mode
                classifier, accuracy = self.classifier(dataset, labels, pl_module.device)
            with torch.no_grad():
                codes = pl_module.sampler.sample(self.n_samples, pl_module.prior, torch.Generator().manual_seed(0))
                images = pl_module.decode_image(codes.to(pl_module.device))
                probabilities = torch.softmax(classifier(images.float().flatten(1)), -1)
        scores = sample_scores(probabilities) | {"sample_classifier_accuracy": accuracy}
        pl_module.log_dict({f"test/{name}": value for name, value in scores.items()}, batch_size=1)

    def classifier(self, dataset, labels: torch.Tensor, device: torch.device) -> tuple[nn.Module, float]:
        """The trained classifier and its accuracy on the held-out tenth of the (shuffled) labelled images."""
        known = (labels >= 0).nonzero().flatten()
        order = known[torch.randperm(len(known))][: self.max_images]
        images = dataset.images_at(order).float().flatten(1).to(device)
        targets = labels[order].to(device)
        cut = max(len(order) // 10, 1)  # rows [0, cut) are held out
        model = nn.Sequential(
            nn.Linear(images.shape[1], self.hidden), nn.ReLU(), nn.Linear(self.hidden, int(labels.max()) + 1)
        )
        model = model.to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        for _ in range(self.epochs):
            for rows in (cut + torch.randperm(len(order) - cut)).split(128):
                loss = F.cross_entropy(model(images[rows]), targets[rows])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        with torch.no_grad():
            accuracy = float((model(images[:cut]).argmax(-1) == targets[:cut]).float().mean())
        return model.eval(), accuracy
