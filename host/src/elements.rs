//! The periodic table as the file formats and the integrators need it: symbols
//! (extended XYZ names species by symbol) and standard atomic masses (IUPAC
//! abridged values, as ASE uses; the mass number of the longest-lived isotope for
//! elements without a stable one).

/// Symbols of elements 1 to 100 (index Z − 1).
const SYMBOLS: [&str; 100] = [
    "H", "He", "Li", "Be", "B", "C", "N", "O", "F", "Ne", "Na", "Mg", "Al", "Si", "P", "S", "Cl", "Ar", "K", "Ca",
    "Sc", "Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn", "Ga", "Ge", "As", "Se", "Br", "Kr", "Rb", "Sr", "Y",
    "Zr", "Nb", "Mo", "Tc", "Ru", "Rh", "Pd", "Ag", "Cd", "In", "Sn", "Sb", "Te", "I", "Xe", "Cs", "Ba", "La", "Ce",
    "Pr", "Nd", "Pm", "Sm", "Eu", "Gd", "Tb", "Dy", "Ho", "Er", "Tm", "Yb", "Lu", "Hf", "Ta", "W", "Re", "Os", "Ir",
    "Pt", "Au", "Hg", "Tl", "Pb", "Bi", "Po", "At", "Rn", "Fr", "Ra", "Ac", "Th", "Pa", "U", "Np", "Pu", "Am", "Cm",
    "Bk", "Cf", "Es", "Fm",
];

/// Atomic masses (amu) of elements 1 to 100 (index Z − 1).
const MASSES: [f64; 100] = [
    1.008,
    4.002602,
    6.94,
    9.0121831,
    10.81,
    12.011,
    14.007,
    15.999,
    18.998403163,
    20.1797,
    22.98976928,
    24.305,
    26.9815385,
    28.085,
    30.973761998,
    32.06,
    35.45,
    39.948,
    39.0983,
    40.078,
    44.955908,
    47.867,
    50.9415,
    51.9961,
    54.938044,
    55.845,
    58.933194,
    58.6934,
    63.546,
    65.38,
    69.723,
    72.630,
    74.921595,
    78.971,
    79.904,
    83.798,
    85.4678,
    87.62,
    88.90584,
    91.224,
    92.90637,
    95.95,
    97.0,
    101.07,
    102.90550,
    106.42,
    107.8682,
    112.414,
    114.818,
    118.710,
    121.760,
    127.60,
    126.90447,
    131.293,
    132.90545196,
    137.327,
    138.90547,
    140.116,
    140.90766,
    144.242,
    145.0,
    150.36,
    151.964,
    157.25,
    158.92535,
    162.500,
    164.93033,
    167.259,
    168.93422,
    173.054,
    174.9668,
    178.49,
    180.94788,
    183.84,
    186.207,
    190.23,
    192.217,
    195.084,
    196.966569,
    200.592,
    204.38,
    207.2,
    208.98040,
    209.0,
    210.0,
    222.0,
    223.0,
    226.0,
    227.0,
    232.0377,
    231.03588,
    238.02891,
    237.0,
    244.0,
    243.0,
    247.0,
    247.0,
    251.0,
    252.0,
    257.0,
];

/// The highest atomic number known here.
pub const MAX_Z: u32 = SYMBOLS.len() as u32;

/// Z of a symbol (case as written: "Cl", not "CL").
pub fn atomic_number(symbol: &str) -> Option<u32> {
    SYMBOLS.iter().position(|&s| s == symbol).map(|k| k as u32 + 1)
}

pub fn symbol(z: u32) -> Option<&'static str> {
    SYMBOLS.get((z as usize).wrapping_sub(1)).copied()
}

/// Standard atomic mass in amu.
pub fn mass(z: u32) -> Option<f64> {
    MASSES.get((z as usize).wrapping_sub(1)).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols_and_masses_line_up() {
        for (z, s, m) in [
            (1, "H", 1.008),
            (6, "C", 12.011),
            (8, "O", 15.999),
            (17, "Cl", 35.45),
            (29, "Cu", 63.546),
            (79, "Au", 196.966569),
            (92, "U", 238.02891),
        ] {
            assert_eq!(atomic_number(s), Some(z));
            assert_eq!(symbol(z), Some(s));
            assert_eq!(mass(z), Some(m));
        }
        assert_eq!(atomic_number("Xx"), None);
        assert_eq!(symbol(0), None);
        assert_eq!(mass(101), None);
        // Masses grow with Z apart from the known inversions (Ar/K, Co/Ni, Te/I, Th/Pa, U/Np, Pu/Am).
        let inversions = MASSES.windows(2).filter(|w| w[1] < w[0]).count();
        assert!(inversions <= 6, "{inversions} mass inversions: a misplaced entry?");
    }
}
