//! A flattened device tree (a board's `.dtb` as Debian's kernel package ships it), read into an owned tree
//! with parent links, and the walk that finds everything a device needs before its driver can probe: the
//! suppliers it names (regulators, GPIOs, clocks, resets, power domains, mailboxes, firmware, pin control, PHYs,
//! DMA, interrupt controllers) and the parents it sits under — and their suppliers in turn.

use std::collections::{BTreeMap, VecDeque};

use anyhow::{anyhow, Result};

/// One node: its full path, compatible strings, properties, parent.
#[derive(Debug, Clone)]
pub struct Node {
    pub path: String,
    pub parent: Option<usize>,
    pub props: BTreeMap<String, Vec<u8>>,
}

impl Node {
    /// The node's `compatible` strings, most specific first.
    pub fn compatible(&self) -> Vec<&str> {
        self.props
            .get("compatible")
            .map(|v| string_list(v))
            .unwrap_or_default()
    }

    /// Disabled nodes (`status = "disabled"`) get no driver; absent or "okay" means enabled.
    pub fn enabled(&self) -> bool {
        match self.props.get("status") {
            None => true,
            Some(v) => matches!(string_list(v).first(), Some(&"okay") | Some(&"ok")),
        }
    }

    /// The node's own name (last path component, with its unit address).
    pub fn name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or("")
    }

    fn u32(&self, prop: &str) -> Option<u32> {
        let v = self.props.get(prop)?;
        (v.len() == 4).then(|| u32::from_be_bytes([v[0], v[1], v[2], v[3]]))
    }
}

fn string_list(v: &[u8]) -> Vec<&str> {
    v.split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .filter_map(|s| std::str::from_utf8(s).ok())
        .collect()
}

fn cells(v: &[u8]) -> Vec<u32> {
    v.chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Why a node is on the walk: how the node before it reached it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    /// Index of the node that named or contains it.
    pub from: usize,
    /// The property that names it (`vmmc-supply`, `clocks`, …), or `parent`.
    pub via: String,
}

/// A whole device tree.
#[derive(Debug, Clone)]
pub struct Tree {
    pub nodes: Vec<Node>,
    phandles: BTreeMap<u32, usize>,
}

/// Properties that name suppliers as `<phandle cells…>` lists, and the provider property giving each entry's
/// argument count (None: a bare list of phandles).
const SPECIFIER_LISTS: &[(&str, Option<&str>)] = &[
    ("clocks", Some("#clock-cells")),
    ("resets", Some("#reset-cells")),
    ("power-domains", Some("#power-domain-cells")),
    ("mboxes", Some("#mbox-cells")),
    ("phys", Some("#phy-cells")),
    ("dmas", Some("#dma-cells")),
    ("interrupts-extended", Some("#interrupt-cells")),
    ("iommus", Some("#iommu-cells")),
    ("gpios", Some("#gpio-cells")),
    ("gpio", Some("#gpio-cells")),
    ("phy-handle", None),
    ("firmware", None),
    ("interrupt-parent", None),
    ("mmc-pwrseq", None),
    ("msi-parent", None),
];

impl Tree {
    /// Parse a `.dtb`.
    pub fn parse(dtb: &[u8]) -> Result<Tree> {
        let fdt = fdt::Fdt::new(dtb).map_err(|e| anyhow!("not a device tree blob: {e:?}"))?;
        let root = fdt
            .find_node("/")
            .ok_or_else(|| anyhow!("device tree without a root node"))?;
        let mut tree = Tree {
            nodes: Vec::new(),
            phandles: BTreeMap::new(),
        };
        tree.add(root, String::new(), None);
        Ok(tree)
    }

    fn add(&mut self, node: fdt::node::FdtNode<'_, '_>, path: String, parent: Option<usize>) {
        let props: BTreeMap<String, Vec<u8>> = node
            .properties()
            .map(|p| (p.name.to_string(), p.value.to_vec()))
            .collect();
        let index = self.nodes.len();
        let path = if parent.is_none() {
            "/".to_string()
        } else {
            path
        };
        self.nodes.push(Node {
            path: path.clone(),
            parent,
            props,
        });
        for key in ["phandle", "linux,phandle"] {
            if let Some(p) = self.nodes[index].u32(key) {
                self.phandles.insert(p, index);
            }
        }
        for child in node.children() {
            let child_path = format!("{}/{}", path.trim_end_matches('/'), child.name);
            self.add(child, child_path, Some(index));
        }
    }

    pub fn node(&self, path: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.path == path)
    }

    /// Enabled nodes with one of these compatible strings.
    pub fn enabled_with(&self, compatible: impl Fn(&str) -> bool) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| {
                self.nodes[i].enabled() && self.nodes[i].compatible().iter().any(|c| compatible(c))
            })
            .collect()
    }

    /// The nodes `index` names as suppliers, each with the property that names it.
    pub fn suppliers(&self, index: usize) -> Vec<(usize, String)> {
        let node = &self.nodes[index];
        let mut out = Vec::new();
        for (name, value) in &node.props {
            let list = if name.ends_with("-supply") {
                Some(None)
            } else if name.ends_with("-gpios") || name.ends_with("-gpio") {
                Some(Some("#gpio-cells"))
            } else if name.starts_with("pinctrl-") && name[8..].chars().all(|c| c.is_ascii_digit())
            {
                Some(None)
            } else {
                SPECIFIER_LISTS
                    .iter()
                    .find(|(p, _)| p == name)
                    .map(|(_, c)| *c)
            };
            let Some(cells_prop) = list else { continue };
            let words = cells(value);
            let mut i = 0;
            while i < words.len() {
                let phandle = words[i];
                i += 1;
                // A zero phandle is an empty slot (gpio lists use them).
                let Some(&target) = self.phandles.get(&phandle) else {
                    continue;
                };
                let args = cells_prop
                    .and_then(|c| self.nodes[target].u32(c))
                    .unwrap_or(0);
                i += args as usize;
                let target = if name.starts_with("pinctrl-") {
                    // A pin configuration node: its controller is the nearest ancestor with a compatible.
                    self.nearest_compatible(target).unwrap_or(target)
                } else {
                    target
                };
                out.push((target, name.clone()));
            }
        }
        // The interrupt controller, named on the node or inherited from an ancestor.
        if !node.props.contains_key("interrupt-parent") && (node.props.contains_key("interrupts")) {
            let mut up = node.parent;
            while let Some(p) = up {
                if let Some(ph) = self.nodes[p].u32("interrupt-parent") {
                    if let Some(&t) = self.phandles.get(&ph) {
                        out.push((t, "interrupt-parent".into()));
                    }
                    break;
                }
                up = self.nodes[p].parent;
            }
        }
        out
    }

    fn nearest_compatible(&self, mut index: usize) -> Option<usize> {
        loop {
            if !self.nodes[index].compatible().is_empty() {
                return Some(index);
            }
            index = self.nodes[index].parent?;
        }
    }

    /// Everything `start` needs, breadth first: its suppliers, its parents, and theirs (not through disabled
    /// nodes). Each reached node comes with the edge that reached it first.
    pub fn needs(&self, start: usize) -> Vec<(usize, Option<Edge>)> {
        let mut seen: BTreeMap<usize, Option<Edge>> = BTreeMap::new();
        let mut order = Vec::new();
        let mut queue = VecDeque::from([(start, None)]);
        while let Some((index, edge)) = queue.pop_front() {
            if seen.contains_key(&index) {
                continue;
            }
            seen.insert(index, edge.clone());
            order.push((index, edge));
            // A disabled node gets no driver and waits for nothing: its own suppliers are not needed.
            if index != start && !self.nodes[index].enabled() {
                continue;
            }
            if let Some(parent) = self.nodes[index].parent {
                queue.push_back((
                    parent,
                    Some(Edge {
                        from: index,
                        via: "parent".into(),
                    }),
                ));
            }
            for (target, via) in self.suppliers(index) {
                queue.push_back((target, Some(Edge { from: index, via })));
            }
        }
        order
    }

    /// How `index` was reached from the start of a walk, `start ← vmmc-supply ← …` read from the start.
    pub fn chain(&self, walk: &[(usize, Option<Edge>)], index: usize) -> String {
        let edges: BTreeMap<usize, &Option<Edge>> = walk.iter().map(|(i, e)| (*i, e)).collect();
        let mut parts = vec![self.nodes[index].path.clone()];
        let mut at = index;
        while let Some(Some(edge)) = edges.get(&at) {
            parts.push(format!("{} ({})", self.nodes[edge.from].path, edge.via));
            at = edge.from;
        }
        parts.reverse();
        parts.join(" → ")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use vm_fdt::FdtWriter;

    /// A Pi 4-shaped tree: the SD controller under a bus, powered by a fixed regulator switched by a GPIO of the
    /// firmware's expander, which talks through the mailbox.
    pub(crate) fn pi4_like() -> Vec<u8> {
        let mut w = FdtWriter::new().unwrap();
        let root = w.begin_node("").unwrap();
        w.property_string("compatible", "raspberrypi,4-model-b")
            .unwrap();
        w.property_u32("interrupt-parent", 1).unwrap();

        let gic = w.begin_node("interrupt-controller@40041000").unwrap();
        w.property_string("compatible", "arm,gic-400").unwrap();
        w.property_u32("#interrupt-cells", 3).unwrap();
        w.property_phandle(1).unwrap();
        w.end_node(gic).unwrap();

        let soc = w.begin_node("soc").unwrap();
        w.property_string("compatible", "simple-bus").unwrap();
        let mbox = w.begin_node("mailbox@7e00b880").unwrap();
        w.property_string("compatible", "brcm,bcm2835-mbox")
            .unwrap();
        w.property_u32("#mbox-cells", 0).unwrap();
        w.property_array_u32("interrupts", &[0, 33, 4]).unwrap();
        w.property_phandle(2).unwrap();
        w.end_node(mbox).unwrap();
        let gpio = w.begin_node("gpio@7e200000").unwrap();
        w.property_string("compatible", "brcm,bcm2711-gpio")
            .unwrap();
        w.property_phandle(6).unwrap();
        let pins = w.begin_node("emmc_gpio").unwrap();
        w.property_array_u32("brcm,pins", &[34, 35]).unwrap();
        w.property_phandle(7).unwrap();
        w.end_node(pins).unwrap();
        w.end_node(gpio).unwrap();
        let emmc2bus = w.begin_node("emmc2bus").unwrap();
        w.property_string("compatible", "simple-bus").unwrap();
        let emmc2 = w.begin_node("mmc@7e340000").unwrap();
        w.property_string("compatible", "brcm,bcm2711-emmc2")
            .unwrap();
        w.property_array_u32("clocks", &[5, 51]).unwrap();
        w.property_u32("vqmmc-supply", 3).unwrap();
        w.property_u32("vmmc-supply", 4).unwrap();
        w.property_u32("pinctrl-0", 7).unwrap();
        w.property_array_u32("interrupts", &[0, 126, 4]).unwrap();
        w.end_node(emmc2).unwrap();
        let off = w.begin_node("mmc@7e300000").unwrap();
        w.property_string("compatible", "brcm,bcm2835-sdhci")
            .unwrap();
        w.property_string("status", "disabled").unwrap();
        w.end_node(off).unwrap();
        w.end_node(emmc2bus).unwrap();
        w.end_node(soc).unwrap();

        let clocks = w.begin_node("clocks").unwrap();
        let fw_clk = w.begin_node("clock@3").unwrap();
        w.property_string("compatible", "fixed-clock").unwrap();
        w.property_u32("#clock-cells", 1).unwrap();
        w.property_phandle(5).unwrap();
        w.end_node(fw_clk).unwrap();
        w.end_node(clocks).unwrap();

        let firmware = w.begin_node("firmware").unwrap();
        w.property_string_list(
            "compatible",
            vec!["raspberrypi,bcm2835-firmware".into(), "simple-mfd".into()],
        )
        .unwrap();
        w.property_u32("mboxes", 2).unwrap();
        let expgpio = w.begin_node("gpio").unwrap();
        w.property_string("compatible", "raspberrypi,firmware-gpio")
            .unwrap();
        w.property_u32("#gpio-cells", 2).unwrap();
        w.property_phandle(8).unwrap();
        w.end_node(expgpio).unwrap();
        w.end_node(firmware).unwrap();

        let vqmmc = w.begin_node("sd_io_1v8_reg").unwrap();
        w.property_string("compatible", "regulator-gpio").unwrap();
        w.property_array_u32("gpios", &[8, 4, 0]).unwrap();
        w.property_phandle(3).unwrap();
        w.end_node(vqmmc).unwrap();
        let vmmc = w.begin_node("sd_vcc_reg").unwrap();
        w.property_string("compatible", "regulator-fixed").unwrap();
        w.property_array_u32("gpio", &[8, 6, 0]).unwrap();
        w.property_phandle(4).unwrap();
        w.end_node(vmmc).unwrap();

        w.end_node(root).unwrap();
        w.finish().unwrap()
    }

    fn compatibles(tree: &Tree, walk: &[(usize, Option<Edge>)]) -> Vec<String> {
        walk.iter()
            .filter_map(|(i, _)| tree.nodes[*i].compatible().first().map(|c| c.to_string()))
            .collect()
    }

    #[test]
    fn the_sd_controller_needs_its_regulators_their_gpio_expander_and_the_mailbox() {
        let tree = Tree::parse(&pi4_like()).unwrap();
        let sd = tree.enabled_with(|c| c == "brcm,bcm2711-emmc2");
        assert_eq!(sd.len(), 1);
        assert_eq!(tree.nodes[sd[0]].path, "/soc/emmc2bus/mmc@7e340000");
        let walk = tree.needs(sd[0]);
        let mut found = compatibles(&tree, &walk);
        found.sort();
        found.dedup();
        assert_eq!(
            found,
            [
                "arm,gic-400",
                "brcm,bcm2711-emmc2",
                "brcm,bcm2711-gpio",
                "brcm,bcm2835-mbox",
                "fixed-clock",
                "raspberrypi,4-model-b",
                "raspberrypi,bcm2835-firmware",
                "raspberrypi,firmware-gpio",
                "regulator-fixed",
                "regulator-gpio",
                "simple-bus",
            ]
        );
        // The chain explains how the mailbox was reached.
        let mbox = tree.node("/soc/mailbox@7e00b880").unwrap();
        let chain = tree.chain(&walk, mbox);
        assert!(chain.starts_with("/soc/emmc2bus/mmc@7e340000 ("), "{chain}");
        assert!(chain.contains("(mboxes)"), "{chain}");
        assert!(chain.contains("-supply)"), "{chain}");
    }

    #[test]
    fn disabled_nodes_are_not_starting_points() {
        let tree = Tree::parse(&pi4_like()).unwrap();
        assert!(tree.enabled_with(|c| c == "brcm,bcm2835-sdhci").is_empty());
    }

    #[test]
    fn garbage_is_not_a_tree() {
        assert!(Tree::parse(b"not a dtb at all, not at all").is_err());
    }
}
