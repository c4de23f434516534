//! A small XML well-formedness check for the tests (no XML crate is a
//! dependency): one root element, tags balanced and properly nested, names
//! well formed, attributes quoted and not repeated, and `<` and `&` in text
//! and attribute values only as markup or one of XML's five entities.

pub(super) fn check(xml: &str) -> Result<(), String> {
    let mut stack: Vec<String> = Vec::new();
    let mut roots = 0;
    let mut rest = xml;
    while !rest.is_empty() {
        let Some(open) = rest.find('<') else {
            outside(rest, &stack)?;
            break;
        };
        outside(&rest[..open], &stack)?;
        rest = &rest[open..];
        for (start, end) in [("<!--", "-->"), ("<?", "?>")] {
            if rest.starts_with(start) {
                let close = rest.find(end).ok_or(format!("unclosed {start}"))?;
                rest = &rest[close + end.len()..];
            }
        }
        if !rest.starts_with('<') || rest.starts_with("<!--") || rest.starts_with("<?") {
            continue;
        }
        let close = tag_end(rest).ok_or("a tag is never closed with `>`")?;
        let tag = &rest[1..close];
        rest = &rest[close + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            let name = name.trim_end();
            match stack.pop() {
                Some(open) if open == name => {}
                Some(open) => return Err(format!("</{name}> closes <{open}>")),
                None => return Err(format!("</{name}> closes nothing")),
            }
            continue;
        }
        let self_closing = tag.ends_with('/');
        let body = tag.strip_suffix('/').unwrap_or(tag);
        let name = element(body)?;
        if stack.is_empty() {
            roots += 1;
        }
        if !self_closing {
            stack.push(name);
        }
    }
    match (stack.last(), roots) {
        (Some(open), _) => Err(format!("<{open}> is never closed")),
        (None, 1) => Ok(()),
        (None, n) => Err(format!("{n} root elements")),
    }
}

/// Index of the `>` that ends the tag starting at `tag[0]`, skipping quoted
/// attribute values.
fn tag_end(tag: &str) -> Option<usize> {
    let mut quote = None;
    for (i, c) in tag.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '>') => return Some(i),
            _ => {}
        }
    }
    None
}

/// Text between tags: character data inside the root, whitespace outside.
fn outside(text: &str, stack: &[String]) -> Result<(), String> {
    if stack.is_empty() && !text.trim().is_empty() {
        return Err(format!("text outside the root element: {text:?}"));
    }
    characters(text)
}

/// No raw `<`, and every `&` starts an entity.
fn characters(text: &str) -> Result<(), String> {
    if text.contains('<') {
        return Err(format!("raw `<` in {text:?}"));
    }
    for (i, _) in text.match_indices('&') {
        let entity = &text[i + 1..];
        let end = entity
            .find(';')
            .ok_or(format!("unterminated entity in {text:?}"))?;
        let name = &entity[..end];
        let numeric = name
            .strip_prefix("#x")
            .map(|h| !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit()))
            .or_else(|| {
                name.strip_prefix('#')
                    .map(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()))
            })
            .unwrap_or(false);
        if !numeric && !matches!(name, "amp" | "lt" | "gt" | "quot" | "apos") {
            return Err(format!("unknown entity &{name}; in {text:?}"));
        }
    }
    Ok(())
}

fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_alphanumeric() || matches!(c, '_' | ':' | '-' | '.'))
}

/// An opening tag's name, after checking its attributes.
fn element(body: &str) -> Result<String, String> {
    let name_end = body.find(char::is_whitespace).unwrap_or(body.len());
    let name = &body[..name_end];
    if !is_name(name) {
        return Err(format!("bad element name {name:?}"));
    }
    let mut seen: Vec<&str> = Vec::new();
    let mut rest = body[name_end..].trim_start();
    while !rest.is_empty() {
        let eq = rest
            .find('=')
            .ok_or(format!("attribute without value in <{name}>"))?;
        let attr = rest[..eq].trim_end();
        if !is_name(attr) || seen.contains(&attr) {
            return Err(format!("bad or repeated attribute {attr:?} in <{name}>"));
        }
        seen.push(attr);
        let value = rest[eq + 1..].trim_start();
        let quote = value.chars().next().filter(|c| matches!(c, '"' | '\''));
        let quote = quote.ok_or(format!("unquoted attribute {attr} in <{name}>"))?;
        let end = value[1..]
            .find(quote)
            .ok_or(format!("unclosed attribute {attr}"))?;
        characters(&value[1..1 + end])?;
        let after = &value[end + 2..];
        if !after.is_empty() && !after.starts_with(char::is_whitespace) {
            return Err(format!("no space after attribute {attr} in <{name}>"));
        }
        rest = after.trim_start();
    }
    Ok(name.to_string())
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn accepts_well_formed_and_rejects_the_rest() {
        assert!(
            check("<?xml version=\"1.0\"?>\n<a x=\"1 &amp; 2\"><b/>t &lt; u<!-- c --></a>\n")
                .is_ok()
        );
        assert!(check("<a y='>'></a>").is_ok());
        for bad in [
            "<a><b></a></b>",
            "<a>",
            "<a></a><b></b>",
            "<a x=1></a>",
            "<a x=\"1\" x=\"2\"></a>",
            "<a>1 < 2</a>",
            "<a>fish & chips</a>",
            "<a x=\"&bogus;\"/>",
            "text<a/>",
            "<1a/>",
        ] {
            assert!(check(bad).is_err(), "{bad}");
        }
    }
}
