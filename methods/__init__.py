"""What the papers propose; each module registers its methods with the harness."""
