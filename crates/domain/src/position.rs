//! Net positions: signed quantity, average entry price and realised profit and loss.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::order::Side;

/// A net position in one instrument, updated fill by fill.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// Signed: positive long, negative short.
    pub quantity: Decimal,
    /// Average entry price of the open quantity (zero when flat).
    pub average_entry_price: Decimal,
    /// Realised profit and loss in the quote asset, before fees.
    pub realized_pnl: Decimal,
}

impl Position {
    /// Applies a fill of `quantity` at `price` on `side`.
    ///
    /// Reducing fills realise profit against the average entry price; a fill that crosses
    /// through flat opens the remainder at the fill price.
    pub fn apply_fill(&mut self, side: Side, quantity: Decimal, price: Decimal) {
        let signed = side.sign() * quantity;
        let same_direction = self.quantity.is_zero()
            || self.quantity.is_sign_positive() == signed.is_sign_positive();
        if same_direction {
            let new_quantity = self.quantity + signed;
            self.average_entry_price = (self.average_entry_price * self.quantity.abs()
                + price * quantity)
                / new_quantity.abs();
            self.quantity = new_quantity;
            return;
        }
        let closing = quantity.min(self.quantity.abs());
        // A long closes by selling above entry for a profit; a short by buying below.
        let direction = if self.quantity.is_sign_positive() {
            Decimal::ONE
        } else {
            Decimal::NEGATIVE_ONE
        };
        self.realized_pnl += (price - self.average_entry_price) * closing * direction;
        self.quantity += signed;
        if self.quantity.is_zero() {
            self.average_entry_price = Decimal::ZERO;
        } else if quantity > closing {
            self.average_entry_price = price;
        }
    }

    /// Unrealised profit and loss at `mark`.
    pub fn unrealized_pnl(&self, mark: Decimal) -> Decimal {
        (mark - self.average_entry_price) * self.quantity
    }
}

#[cfg(test)]
mod tests;
