from vae_lightning.demo.main import main

main()
