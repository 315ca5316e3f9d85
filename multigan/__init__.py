"""multigan: GANs on images and sounds with one adversarial engine."""
