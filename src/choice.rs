//! Settings picked by name from a fixed list (command-line values, config files). Each such
//! enum lists its values once, with the name users type and a line of help; the command line
//! (src/cli) turns the list into its possible values, so nothing below it depends on clap.

pub trait Choice: Copy + PartialEq + 'static {
    /// Every value: (name, value, help), in the order help lists them.
    const CHOICES: &'static [(&'static str, Self, &'static str)];

    /// The name users type for this value.
    fn name(self) -> &'static str {
        Self::CHOICES
            .iter()
            .find(|(_, value, _)| *value == self)
            .map_or("?", |(name, _, _)| name)
    }

    /// The value called `name`.
    fn from_name(name: &str) -> Option<Self> {
        Self::CHOICES
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, value, _)| *value)
    }
}
