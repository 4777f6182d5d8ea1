"""The web page of the demo (Gradio Blocks) over a `DemoModel`: three tabs, each a few components wired to the
model's functions. Every handler turns a bad upload or any other failure into a message in the page; the app
itself never stops. Each browser session has its own encoded photos (`gr.State`), so users do not see each
other's results.

The upload handlers take Gradio's raw file payload (`preprocess=False`) and open the file themselves, so that a
file which is not an image, is truncated, or is too large gets the demo's own message rather than a generic
error.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import torch

from vae_lightning.demo.model import DemoInputError, DemoModel, Photo, upload_path

log = logging.getLogger(__name__)


@dataclass
class Settings:
    """What the page offers: `scale` the slider's far end along an attribute, `steps` frames of a GIF,
    `frame_ms` / `pause_ms` its timing, `n_samples` samples per draw, `n_dims` latent sliders,
    `max_file_bytes` the largest image taken, however it is sent."""

    scale: float = 1.5
    steps: int = 25
    frame_ms: int = 80
    pause_ms: int = 800
    n_samples: int = 16
    n_dims: int = 6
    max_file_bytes: int = 100 * 2**20


def problem(error: Exception) -> str:
    """The message shown for a failed action: the demo's own text, or the exception for anything else (logged
    with its traceback on the server)."""
    if isinstance(error, DemoInputError):
        return f"**{error}**"
    log.exception("The demo failed")
    return f"**Something went wrong: {type(error).__name__}: {error}**"


def guarded(fn: Callable[..., tuple], empty: tuple) -> Callable[..., tuple]:
    """`fn`, with any exception turned into the outputs `empty` and the message as the last output."""

    def handler(*args: Any) -> tuple:
        try:
            return fn(*args)
        except Exception as error:
            return (*empty, problem(error))

    handler.__name__ = fn.__name__
    return handler


def build(model: DemoModel, settings: Settings, folder: Path, title: str) -> gr.Blocks:
    """The page. `folder` holds the GIFs and strips it writes (a temporary folder the caller removes)."""

    def read(payload: Any) -> Photo | None:
        path, name = upload_path(payload, folder, settings.max_file_bytes)
        return None if path is None else model.photo(path, name)

    def write(frames, ends, stem: str) -> tuple[list[str], Any]:
        gif, png = model.write_morph(
            frames, ends, folder / uuid.uuid4().hex, stem, settings.frame_ms, settings.pause_ms
        )
        return [str(gif), str(png)], str(png)

    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=(3600, 3600)) as app:
        gr.Markdown(f"# {title}")
        if model.data_problem:
            gr.Markdown(f"Moving along attributes is off: {model.data_problem}")

        if model.attributes:
            attribute_tab(model, settings, read, write)
        between_tab(model, settings, read, write)
        explore_tab(model, settings, read)
    return app


def attribute_tab(model: DemoModel, settings: Settings, read, write) -> None:
    faces_dogs = model.is_faces_and_dogs
    with gr.Tab("Friend to dog" if faces_dogs else "Along an attribute"):
        gr.Markdown(
            "Upload a photo of a friend (or take one with the webcam). The face is found and cropped as the "
            "training faces were; the slider moves its code towards the dogs."
            if faces_dogs
            else "Upload an image; the slider moves its code along the chosen attribute of the training data."
        )
        with gr.Row():
            upload = gr.Image(label="Your photo", sources=["upload", "webcam", "clipboard"], type="filepath")
            crop = gr.Image(label="What the model sees", interactive=False, format="png")
            out = gr.Image(label="Decoded", interactive=False, format="png")
        note = gr.Markdown()
        attribute = gr.Dropdown(
            model.attributes,
            value=model.default_attribute,
            label="Attribute",
            visible=not faces_dogs and len(model.attributes) > 1,
        )
        label = "friend → dog" if faces_dogs else "along the attribute"
        slider = gr.Slider(0.0, settings.scale, value=1.0 if faces_dogs else 0.0, step=0.01, label=label)
        make = gr.Button("Make the GIF and the strip (from the photo to the slider's point)")
        files = gr.File(label="Download", file_count="multiple", interactive=False)
        strip = gr.Image(label="Strip", interactive=False, format="png")
        photo = gr.State()

        def on_photo(payload, name, s):
            found = read(payload)
            if found is None:
                return None, None, None, ""
            return found, model.crop_image(found), model.along(found, name, float(s)), found.message

        def on_slide(found, name, s):
            if found is None:
                raise DemoInputError("Upload a photo first (or take one with the webcam).")
            return model.along(found, name, float(s)), found.message

        def on_make(found, name, s):
            if found is None:
                raise DemoInputError("Upload a photo first (or take one with the webcam).")
            scale = float(s) if float(s) > 0 else settings.scale
            frames = model.along_frames(found, name, scale, settings.steps)
            stem = "friend_dog" if faces_dogs else f"along_{name}"
            files_, png = write(frames, [found.crop.pixels], stem)
            return files_, png, f"{settings.steps} frames, s from 0 to {scale:g}."

        upload.change(
            guarded(on_photo, (None, None, None)),
            [upload, attribute, slider],
            [photo, crop, out, note],
            api_name="friend_photo",
            preprocess=False,
        )
        for control, name in ((slider, "friend_frame"), (attribute, "friend_attribute")):
            control.change(
                guarded(on_slide, (None,)),
                [photo, attribute, slider],
                [out, note],
                api_name=name,
                show_progress="hidden",
                trigger_mode="always_last",
            )
        make.click(
            guarded(on_make, (None, None)), [photo, attribute, slider], [files, strip, note], api_name="friend_gif"
        )


def between_tab(model: DemoModel, settings: Settings, read, write) -> None:
    with gr.Tab("Between two photos"):
        gr.Markdown("The seed's morph: the straight line from the first photo's code to the second's.")
        with gr.Row():
            first = gr.Image(label="First photo", sources=["upload", "webcam", "clipboard"], type="filepath")
            out = gr.Image(label="Decoded", interactive=False, format="png")
            second = gr.Image(label="Second photo", sources=["upload", "webcam", "clipboard"], type="filepath")
        note = gr.Markdown()
        slider = gr.Slider(0.0, 1.0, value=0.5, step=0.01, label="first → second")
        make = gr.Button("Make the GIF and the strip")
        files = gr.File(label="Download", file_count="multiple", interactive=False)
        strip = gr.Image(label="Strip", interactive=False, format="png")
        photos = gr.State({})

        def frame(found: dict, t: float) -> tuple[Any, str]:
            notes = " ".join(f"{which}: {p.message}" for which, p in found.items())
            if len(found) < 2:
                return (model.image(next(iter(found.values())).loc) if found else None), notes
            return model.between(found["First"], found["Second"], float(t)), notes

        def on_photo(which: str):
            def handler(payload, found, t):
                found = dict(found or {})
                photo = read(payload)
                if photo is None:
                    found.pop(which, None)
                else:
                    found[which] = photo
                return found, *frame(found, t)

            handler.__name__ = f"on_{which.lower()}"
            return handler

        def on_slide(found, t):
            return frame(found or {}, t)

        def on_make(found, _t):
            if len(found or {}) < 2:
                raise DemoInputError("Upload both photos first.")
            a, b = found["First"], found["Second"]
            files_, png = write(model.between_frames(a, b, settings.steps), [a.crop.pixels, b.crop.pixels], "morph")
            return files_, png, f"{settings.steps} frames from {a.name} to {b.name}."

        for image, which in ((first, "First"), (second, "Second")):
            image.change(
                guarded(on_photo(which), (gr.update(), None)),
                [image, photos, slider],
                [photos, out, note],
                api_name=f"between_{which.lower()}",
                preprocess=False,
            )
        slider.change(
            guarded(on_slide, (None,)),
            [photos, slider],
            [out, note],
            api_name="between_frame",
            show_progress="hidden",
            trigger_mode="always_last",
        )
        make.click(guarded(on_make, (None, None)), [photos, slider], [files, strip, note], api_name="between_gif")


def explore_tab(model: DemoModel, settings: Settings, read) -> None:
    with gr.Tab("Explore the latent space"):
        gr.Markdown("## Samples from the model's prior")
        draw = gr.Button("Draw new samples")
        samples = gr.Image(label="Decoded samples", interactive=False, format="png")
        seed = gr.State(0)

        def on_draw(n):
            return model.samples(settings.n_samples, int(n)), int(n) + 1

        draw.click(on_draw, [seed], [samples, seed], api_name="samples")

        if model.grid_range is not None:
            gr.Markdown("## The 2-D latent space: click a point of the grid, or move z1 and z2")
            (x0, x1), (y0, y1) = model.grid_range
            with gr.Row():
                label = "15 x 15 decodes (z1 to the right, z2 up)"
                grid = gr.Image(value=model.grid(), label=label, interactive=False, format="png")
                point = gr.Image(label="The chosen point", interactive=False, format="png")
            z1 = gr.Slider(x0, x1, value=(x0 + x1) / 2, step=0.01, label="z1")
            z2 = gr.Slider(y0, y1, value=(y0 + y1) / 2, step=0.01, label="z2")
            where = gr.Markdown()

            def on_click(evt: gr.SelectData):
                return model.grid_code((float(evt.index[0]), float(evt.index[1])), model.grid_picture_size)

            def on_point(a, b):
                z = (float(a), float(b))
                return model.grid(z), model.image(torch.tensor(z)), f"z = ({z[0]:.2f}, {z[1]:.2f})"

            grid.select(on_click, None, [z1, z2], api_visibility="undocumented")
            for control, name in ((z1, "grid_z1"), (z2, "grid_z2")):
                control.change(
                    guarded(on_point, (gr.update(), None)),
                    [z1, z2],
                    [grid, point, where],
                    api_name=name,
                    show_progress="hidden",
                    trigger_mode="always_last",
                )

        gr.Markdown("## The most active latent dimensions of an image")
        with gr.Row():
            upload = gr.Image(label="An image", sources=["upload", "webcam", "clipboard"], type="filepath")
            out = gr.Image(label="Decoded", interactive=False, format="png")
        note = gr.Markdown()
        n = min(settings.n_dims, model.vae.latent_dim)
        sliders = [gr.Slider(-3, 3, value=0, step=0.01, label=f"dimension {i + 1}", visible=False) for i in range(n)]
        state = gr.State()

        def on_photo(payload):
            photo = read(payload)
            if photo is None:
                return None, None, *[gr.update(visible=False)] * n, ""
            dims = model.active_dims(photo, n)
            updates = [
                gr.update(
                    minimum=loc - 3 * std, maximum=loc + 3 * std, value=loc, visible=True, label=f"z{d}, KL {kl:.2f}"
                )
                for d, kl, loc, std in dims
            ]
            return (photo, [d for d, *_ in dims]), model.image(photo.loc), *updates, photo.message

        def on_slide(found, *values):
            if found is None:
                raise DemoInputError("Upload an image first.")
            photo, dims = found
            return model.traverse(photo, dims, [float(v) for v in values]), photo.message

        upload.change(
            guarded(on_photo, (None, None, *[gr.update(visible=False)] * n)),
            [upload],
            [state, out, *sliders, note],
            api_name="explore_photo",
            preprocess=False,
        )
        for i, slider in enumerate(sliders):
            slider.change(
                guarded(on_slide, (None,)),
                [state, *sliders],
                [out, note],
                api_name=f"explore_dimension_{i + 1}",
                show_progress="hidden",
                trigger_mode="always_last",
            )
