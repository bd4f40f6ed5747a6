"""Paper studies and sweeps: grids of fits over seeds or betas, tabulated and plotted."""
