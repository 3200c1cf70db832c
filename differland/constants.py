"""Fixed constants of the DALEC model family, each with units and a source.

Calibratable quantities live in :mod:`differland.params`; the numbers here are never fitted.
"""

from __future__ import annotations

import math

# --- ACM: aggregated canopy model (Williams et al. 1997, Ecol. Appl. 7(3), 882-894) -----------
# Values as fixed in the DifferLand ``model/auxi/ACM.py`` (identical in the site and global code).
ACM_DAYLENGTH_COEFFICIENT = 0.0156935  # d1 [gC gC-1 h-1]: GPP multiplier per hour of day length
ACM_THETA = 4.22273  # theta [ppm]: CO2 compensation-point term of the ci quadratic
ACM_K = 208.868  # k [ppm]: half-saturation term of the ci quadratic
ACM_DAYLENGTH_CONSTANT = 0.0453194  # d2 [1]: day-length-independent GPP multiplier
ACM_B2 = 0.37836  # b2 [degC]: hydraulic-resistance term of the canopy conductance
ACM_C1 = 7.19298  # c1 [gC MJ-1]: maximum canopy quantum yield
ACM_A2 = 0.011136  # a2 [degC-1]: temperature coefficient of the N-use term
ACM_C2 = 2.1001  # c2 [m4 m-4]: LAI half-saturation of the quantum yield (applied to LAI^2)
ACM_EB1T = 0.789798  # exponent of |psi_d| in the canopy conductance [1]
ACM_LEAF_WATER_POTENTIAL_GRADIENT = -2.0  # psi_d [MPa]: max soil-leaf water potential difference
ACM_HYDRAULIC_RESISTANCE = 1.0  # H [1]: total hydraulic resistance (fixed)
ACM_FOLIAR_NITROGEN = 1.0  # foliar N [gN m-2 leaf]: fixed to 1, ce absorbs it
SOLAR_DECLINATION_AMPLITUDE_DEG = 23.4  # [deg] amplitude of the solar declination
ACM_YEAR_LENGTH = 365.0  # [d] year length in ACM's declination formula
ACM_DECLINATION_DAY_OFFSET = 10.0  # [d] declination phase: -cos(2 pi (doy + 10) / 365)

# --- Phenology (CARDAMOM DALEC; Bloom & Williams 2015, Biogeosciences 12, 1299-1315) ----------
# sin^2 leaf-fall / labile-release pulses with a 365.25-day period.
PHENOLOGY_YEAR_LENGTH = 365.25  # [d]
# Coefficients of the degree-6 polynomial in ln(L - 1) giving the pulse offset (in units of the
# pulse width), highest power first. Source: CARDAMOM DALEC ``offset()``.
PHENOLOGY_OFFSET_POLYNOMIAL = (
    0.000023599784710,
    0.000332730053021,
    0.000901865258885,
    -0.005437736864888,
    -0.020836027517787,
    0.126972018064287,
    -0.188459767342504,
)

ZERO_CELSIUS = 273.15  # [K] (parameters are positive, so temperature thresholds are in kelvin)

# --- Water ------------------------------------------------------------------------------------
VIOLATION_FACTOR = 0.01  # [1] water-violation penalty = 0.01 x forced water shortfall [mm d-1]

SQRT_PI = math.sqrt(math.pi)
