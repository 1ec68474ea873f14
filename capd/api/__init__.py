"""Front doors: HTTP in, domain calls out, nothing else."""
