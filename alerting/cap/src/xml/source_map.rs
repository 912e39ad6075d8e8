//! Where each mapped element of a parsed document starts, looked up by diagnostic path.

use crate::error::Location;

/// A tree of the CAP elements of one document with their start positions, stored flat.
#[derive(Debug, Clone, Default)]
pub(crate) struct SourceMap {
    nodes: Vec<Entry>,
}

#[derive(Debug, Clone)]
struct Entry {
    name: &'static str,
    loc: Location,
    first_child: u32,
    last_child: u32,
    next_sibling: u32,
}

const NONE: u32 = u32::MAX;

impl SourceMap {
    pub(crate) const NO_PARENT: u32 = NONE;

    pub(crate) fn with_capacity(elements: usize) -> Self {
        SourceMap {
            nodes: Vec::with_capacity(elements),
        }
    }

    /// Adds an element under `parent` (children must be added in document order).
    pub(crate) fn add(&mut self, parent: u32, name: &'static str, loc: Location) -> u32 {
        let index = u32::try_from(self.nodes.len()).unwrap_or(NONE);
        self.nodes.push(Entry {
            name,
            loc,
            first_child: NONE,
            last_child: NONE,
            next_sibling: NONE,
        });
        if let Some(p) = self.nodes.get_mut(parent as usize) {
            let previous = p.last_child;
            p.last_child = index;
            if previous == NONE {
                p.first_child = index;
            } else if let Some(prev) = self.nodes.get_mut(previous as usize) {
                prev.next_sibling = index;
            }
        }
        index
    }

    /// The start of the element named by `path` (`/alert/info[1]/area[0]/polygon[0]`); when
    /// that element is not in the document, the start of its nearest ancestor that is.
    pub(crate) fn locate(&self, path: &str) -> Option<Location> {
        let mut segments = path.split('/').filter(|s| !s.is_empty());
        let root = self.nodes.first()?;
        if segments.next()? != root.name {
            return None;
        }
        let mut current = 0usize;
        for segment in segments {
            let (name, index) = match segment.split_once('[') {
                Some((n, rest)) => (n, rest.trim_end_matches(']').parse::<usize>().unwrap_or(0)),
                None => (segment, 0),
            };
            let mut child = self.nodes[current].first_child;
            let mut seen = 0;
            let mut found = None;
            while let Some(entry) = self.nodes.get(child as usize) {
                if entry.name == name {
                    if seen == index {
                        found = Some(child as usize);
                        break;
                    }
                    seen += 1;
                }
                child = entry.next_sibling;
            }
            match found {
                Some(f) => current = f,
                None => break,
            }
        }
        Some(self.nodes[current].loc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(line: u32) -> Location {
        Location { line, column: 1 }
    }

    #[test]
    fn finds_indexed_paths_and_falls_back_to_ancestors() {
        let mut m = SourceMap::default();
        let alert = m.add(SourceMap::NO_PARENT, "alert", at(1));
        let info0 = m.add(alert, "info", at(2));
        m.add(info0, "area", at(3));
        let info1 = m.add(alert, "info", at(4));
        let area = m.add(info1, "area", at(5));
        m.add(area, "polygon", at(6));
        m.add(area, "polygon", at(7));
        assert_eq!(m.locate("/alert/info[1]/area[0]/polygon[1]"), Some(at(7)));
        assert_eq!(m.locate("/alert/info[0]/area[0]"), Some(at(3)));
        assert_eq!(m.locate("/alert/info[1]/expires"), Some(at(4)));
        assert_eq!(m.locate("/alert"), Some(at(1)));
        assert_eq!(m.locate("/feed"), None);
        assert_eq!(SourceMap::default().locate("/alert"), None);
    }
}
