//! The font of every plotters drawing in the crate (report charts, dataset previews, notebook
//! figures). plotters' `ab_glyph` text backend draws only fonts registered at run time;
//! [`register_font`] registers DejaVu Sans (embedded from `assets/DejaVuSans.ttf`, licence in
//! `assets/DejaVuSans-LICENSE.txt`) as `"sans-serif"` once per process, so nothing depends on
//! the fonts of the machine.

use std::sync::Once;

use plotters::style::FontStyle;

/// DejaVu Sans, embedded.
pub static DEJAVU_SANS: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// Register DejaVu Sans as plotters' `"sans-serif"` (normal style; bold and italic fall back
/// to it). Idempotent and thread-safe; call it before drawing any text with plotters.
pub fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The embedded bytes are a valid TrueType font; a failure here could only come from a
        // corrupted build, and would show as missing text rather than a crash.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, DEJAVU_SANS);
    });
}
