//! What glibc's dlerror text says about a failed dlopen, for the verdict's line.
use crate::model::file_name;

/// The object whose reference was left undefined: `OBJ: undefined symbol: NAME`.
pub(super) fn undefined_symbol_in(error: &str) -> Option<&str> {
    error
        .split_once(": undefined symbol: ")
        .map(|(object, _)| object)
}

/// What a version error means: `LIB: version `GLIBC_2.33' not found (required by OBJ)` is a
/// C library (or another LIB) older than OBJ was built for. glibc quoted with a backquote
/// before 2.39 and with a plain quote since.
pub(super) fn meaning(error: &str, shim: &str) -> Option<String> {
    let (provider, rest) = error.split_once(": version ")?;
    let rest = rest.strip_prefix(['`', '\''])?;
    let (version, rest) = rest.split_once('\'')?;
    let required_by = rest
        .split_once("(required by ")
        .map(|(_, r)| r.trim_end_matches(')'));
    let needs = match required_by {
        Some(object) if file_name(object) != file_name(shim) => file_name(object),
        _ => "the shim",
    };
    let older = if version.starts_with("GLIBC_") {
        "the C library there".to_string()
    } else {
        format!("{} there", file_name(provider))
    };
    Some(format!("{older} is older than {needs} needs ({version})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_error_names_what_is_too_old_for_whom() {
        let shim = "/opt/vgpu/lib/libcuda.so.1";
        let glibc = "/lib/x86_64-linux-gnu/libc.so.6: version `GLIBC_2.33' not found \
                     (required by /opt/vgpu/lib/libcuda.so.1)";
        assert_eq!(
            meaning(glibc, shim).as_deref(),
            Some("the C library there is older than the shim needs (GLIBC_2.33)")
        );
        let cxx = "/usr/lib/libstdc++.so.6: version 'GLIBCXX_3.4.30' not found \
                   (required by /x/libcublas.so.12)";
        assert_eq!(
            meaning(cxx, shim).as_deref(),
            Some("libstdc++.so.6 there is older than libcublas.so.12 needs (GLIBCXX_3.4.30)")
        );
        assert_eq!(
            meaning("libx.so: cannot open shared object file", shim),
            None
        );
    }

    #[test]
    fn an_undefined_symbol_names_the_object_that_wanted_it() {
        assert_eq!(
            undefined_symbol_in("/x/libggml-cuda.so: undefined symbol: cuMemUnmap"),
            Some("/x/libggml-cuda.so")
        );
        assert_eq!(
            undefined_symbol_in("libx.so: cannot open shared object file"),
            None
        );
    }
}
