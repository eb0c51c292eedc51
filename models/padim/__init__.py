"""PaDiM (Defard et al. 2020): a Gaussian per feature-grid position (fit) and Mahalanobis scoring (scorer)."""
