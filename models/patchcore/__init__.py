"""PatchCore (Roth et al. 2022): coreset memory bank (fit, sampling) and nearest-neighbour scoring (scorer)."""
