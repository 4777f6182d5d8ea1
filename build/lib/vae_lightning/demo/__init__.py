"""A local web app over a trained checkpoint (`vae-demo ckpt_path=...`, the `demo` extra): turn a friend into a
dog, morph between two photos, explore the latent space. `model` holds what it does with the model and imports
no web library; `app` is the Gradio page; `main` the command."""
