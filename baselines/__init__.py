"""What the papers compare against; each module registers its methods with the harness."""
