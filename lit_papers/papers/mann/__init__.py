"""Meta-Learning with Memory-Augmented Neural Networks (Santoro, Bartunov, Botvinick, Wierstra, Lillicrap, ICML 2016)."""
