"""What the network sees: activation maximisation of chosen filters (pretrained beside
fine-tuned, as in Kensert et al.'s figure 5) and Grad-CAM heat maps over example crops."""
