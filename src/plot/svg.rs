//! SVG drawing primitives for the chart: panels with grid, ticks and axis
//! titles, polylines, markers and a legend.
//!
//! Output is deterministic: coordinates are written with one decimal and the
//! layout depends only on the data, never on fonts or the clock.

use std::fmt::{Arguments, Write};

use super::axis::Axis;

pub const WIDTH: f64 = 800.0;
const LEFT: f64 = 72.0;
const RIGHT: f64 = 24.0;

/// A curve to draw, and the name the legend gives it.
pub struct Curve {
    pub points: Vec<(f64, f64)>,
    pub label: String,
    pub color: &'static str,
    pub width: f64,
    pub markers: bool,
}

/// A plotting area in pixels with the axes that map data into it.
pub struct Panel {
    pub x: Axis,
    pub y: Axis,
    pub top: f64,
    pub height: f64,
}

impl Panel {
    pub fn px(&self, step: f64) -> f64 {
        LEFT + self.x.fraction(step) * (WIDTH - LEFT - RIGHT)
    }

    pub fn py(&self, v: f64) -> f64 {
        self.top + (1.0 - self.y.fraction(v)) * self.height
    }

    pub fn right(&self) -> f64 {
        WIDTH - RIGHT
    }

    pub fn bottom(&self) -> f64 {
        self.top + self.height
    }

    pub fn center(&self) -> (f64, f64) {
        ((LEFT + self.right()) / 2.0, self.top + self.height / 2.0)
    }
}

/// SVG text being built; writing into a `String` cannot fail.
#[derive(Default)]
pub struct Svg(String);

impl Svg {
    pub fn into_string(self) -> String {
        self.0
    }

    pub fn put(&mut self, args: Arguments) {
        self.0
            .write_fmt(args)
            .expect("writing to a String cannot fail");
    }

    pub fn text(&mut self, x: f64, y: f64, anchor: &str, attrs: &str, text: &str) {
        let text = escape(text);
        self.put(format_args!(
            "<text x=\"{x:.1}\" y=\"{y:.1}\" text-anchor=\"{anchor}\"{attrs}>{text}</text>\n"
        ));
    }
}

/// Grid, frame, tick labels and axis titles of a panel.
pub fn draw_frame(svg: &mut Svg, panel: &Panel, y_title: &str, x_title: bool) {
    let (left, right, top, bottom) = (LEFT, panel.right(), panel.top, panel.bottom());
    svg.put(format_args!("<g stroke=\"#e6e6e6\" stroke-width=\"1\">\n"));
    for &t in &panel.y.ticks {
        let y = panel.py(t);
        svg.put(format_args!(
            "<line x1=\"{left:.1}\" y1=\"{y:.1}\" x2=\"{right:.1}\" y2=\"{y:.1}\"/>\n"
        ));
    }
    for &t in &panel.x.ticks {
        let x = panel.px(t);
        svg.put(format_args!(
            "<line x1=\"{x:.1}\" y1=\"{top:.1}\" x2=\"{x:.1}\" y2=\"{bottom:.1}\"/>\n"
        ));
    }
    svg.put(format_args!("</g>\n"));
    let (w, h) = (right - left, bottom - top);
    svg.put(format_args!(
        "<rect x=\"{left:.1}\" y=\"{top:.1}\" width=\"{w:.1}\" height=\"{h:.1}\" \
         fill=\"none\" stroke=\"#888\"/>\n"
    ));
    for (&t, label) in panel.y.ticks.iter().zip(&panel.y.labels) {
        svg.text(
            left - 6.0,
            panel.py(t) + 4.0,
            "end",
            " fill=\"#333\"",
            label,
        );
    }
    for (&t, label) in panel.x.ticks.iter().zip(&panel.x.labels) {
        svg.text(
            panel.px(t),
            bottom + 16.0,
            "middle",
            " fill=\"#333\"",
            label,
        );
    }
    let mid = (top + bottom) / 2.0;
    let attrs = format!(" transform=\"rotate(-90 18.0 {mid:.1})\" font-size=\"13\"");
    svg.text(18.0, mid, "middle", &attrs, y_title);
    if x_title {
        svg.text(
            (left + right) / 2.0,
            bottom + 38.0,
            "middle",
            " font-size=\"13\"",
            "step",
        );
    }
}

/// A polyline through the points, with a circle on each if asked.
pub fn draw_curve(svg: &mut Svg, panel: &Panel, curve: &Curve) {
    let (color, width) = (curve.color, curve.width);
    if curve.points.len() > 1 {
        let mut points = String::new();
        for &(step, v) in &curve.points {
            let sep = if points.is_empty() { "" } else { " " };
            let _ = write!(points, "{sep}{:.1},{:.1}", panel.px(step), panel.py(v));
        }
        svg.put(format_args!(
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"{width:.1}\" \
             stroke-linejoin=\"round\" points=\"{points}\"/>\n"
        ));
    }
    if curve.markers {
        svg.put(format_args!("<g fill=\"{color}\">\n"));
        for &(step, v) in &curve.points {
            let (x, y) = (panel.px(step), panel.py(v));
            svg.put(format_args!(
                "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3\"/>\n"
            ));
        }
        svg.put(format_args!("</g>\n"));
    }
}

/// A boxed key in the panel's top right corner.
pub fn draw_legend(svg: &mut Svg, panel: &Panel, curves: &[Curve]) {
    if curves.is_empty() {
        return;
    }
    // Width from the longest label at about 7 px a character: no font metrics
    // here, so the output does not depend on the machine.
    let longest = curves
        .iter()
        .map(|c| c.label.chars().count())
        .max()
        .unwrap_or(0);
    let (w, h) = (
        44.0 + 7.0 * longest as f64,
        8.0 + 18.0 * curves.len() as f64,
    );
    let (x, y) = (panel.right() - 10.0 - w, panel.top + 10.0);
    svg.put(format_args!(
        "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{h:.1}\" fill=\"white\" \
         fill-opacity=\"0.9\" stroke=\"#ccc\"/>\n"
    ));
    for (i, curve) in curves.iter().enumerate() {
        let row = y + 4.0 + 18.0 * i as f64 + 9.0;
        let (color, width) = (curve.color, curve.width.max(1.5));
        svg.put(format_args!(
            "<line x1=\"{:.1}\" y1=\"{row:.1}\" x2=\"{:.1}\" y2=\"{row:.1}\" stroke=\"{color}\" \
             stroke-width=\"{width:.1}\"/>\n",
            x + 8.0,
            x + 30.0
        ));
        if curve.markers {
            svg.put(format_args!(
                "<circle cx=\"{:.1}\" cy=\"{row:.1}\" r=\"3\" fill=\"{color}\"/>\n",
                x + 19.0
            ));
        }
        svg.text(x + 36.0, row + 4.0, "start", " fill=\"#333\"", &curve.label);
    }
}

/// Text safe inside an XML element or a double-quoted attribute: the
/// graph renderer's escaping.
use dtl_compiler::tools::graph::xml_escape as escape;
