//! Which instruction set a hand-written kernel runs on: chosen once per
//! call from what the CPU reports, the same way for every kernel that has
//! AVX-512 and AVX2 twins of a portable loop.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Path {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    /// AVX2 with FMA.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Portable,
}

impl Path {
    /// The widest path this CPU runs.
    pub(crate) fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f") {
                return Path::Avx512;
            }
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                return Path::Avx2;
            }
        }
        Path::Portable
    }

    /// Every path this CPU can run, the detected one first (for tests that
    /// compare them).
    #[cfg(test)]
    pub(crate) fn available() -> Vec<Path> {
        let mut paths = vec![Path::detect()];
        #[cfg(target_arch = "x86_64")]
        if paths[0] == Path::Avx512 && std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            paths.push(Path::Avx2);
        }
        if paths[0] != Path::Portable {
            paths.push(Path::Portable);
        }
        paths
    }
}
