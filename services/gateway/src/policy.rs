//! Who may do what: every access rule of DESIGN.md §4 in one place. Handlers ask here; nothing
//! else decides.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Manager,
    SalesRep,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Manager => "manager",
            Role::SalesRep => "sales_rep",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "admin" => Some(Role::Admin),
            "manager" => Some(Role::Manager),
            "sales_rep" => Some(Role::SalesRep),
            _ => None,
        }
    }
}

/// The authenticated caller.
#[derive(Debug, Clone, Copy)]
pub struct Actor {
    pub id: Uuid,
    pub role: Role,
}

/// Role-level permissions (lead-level visibility is [`LeadScope`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    ListUsers,
    /// Create or change users; which ones is [`may_manage_user`].
    ManageUsers,
    AssignLeads,
    ManageInventory,
    ReadAudit,
    ManageTrackingKeys,
    ManageWebhooks,
    /// Set a lead's owner directly (reps' leads are always their own).
    SetLeadOwner,
    Debug,
}

/// The whole role × permission table.
pub fn allows(role: Role, permission: Permission) -> bool {
    use Permission::*;
    match role {
        Role::Admin => true,
        Role::Manager => matches!(
            permission,
            ListUsers | ManageUsers | AssignLeads | ManageInventory | SetLeadOwner
        ),
        Role::SalesRep => false,
    }
}

pub fn require(actor: &Actor, permission: Permission) -> Result<(), ApiError> {
    if allows(actor.role, permission) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "A {} may not do this.",
            actor.role.as_str().replace('_', " ")
        )))
    }
}

/// Which leads the caller can see at all. Anything outside is answered 404, never 403, so a
/// sales rep cannot even learn that another rep's lead exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeadScope {
    All,
    OwnedBy(Uuid),
}

impl LeadScope {
    pub fn of(actor: &Actor) -> Self {
        match actor.role {
            Role::Admin | Role::Manager => LeadScope::All,
            Role::SalesRep => LeadScope::OwnedBy(actor.id),
        }
    }

    /// For SQL: `($n::uuid is null or owner_id = $n)`.
    pub fn owner(self) -> Option<Uuid> {
        match self {
            LeadScope::All => None,
            LeadScope::OwnedBy(id) => Some(id),
        }
    }
}

/// Whether `actor` may create or change a user with `target` role (now and after the change).
/// Admins manage everyone but themselves' role; managers manage sales reps only.
pub fn may_manage_user(
    actor: &Actor,
    target_id: Option<Uuid>,
    target_role: Role,
    new_role: Option<Role>,
) -> bool {
    let changes_own_role = target_id == Some(actor.id) && new_role.is_some_and(|r| r != actor.role);
    if changes_own_role {
        return false;
    }
    match actor.role {
        Role::Admin => true,
        Role::Manager => {
            target_role == Role::SalesRep && new_role.is_none_or(|r| r == Role::SalesRep)
        }
        Role::SalesRep => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Permission; 9] = [
        Permission::ListUsers,
        Permission::ManageUsers,
        Permission::AssignLeads,
        Permission::ManageInventory,
        Permission::ReadAudit,
        Permission::ManageTrackingKeys,
        Permission::ManageWebhooks,
        Permission::SetLeadOwner,
        Permission::Debug,
    ];

    #[test]
    fn admins_may_do_everything_and_reps_nothing_privileged() {
        assert!(ALL.iter().all(|p| allows(Role::Admin, *p)));
        assert!(ALL.iter().all(|p| !allows(Role::SalesRep, *p)));
        assert!(allows(Role::Manager, Permission::AssignLeads));
        assert!(!allows(Role::Manager, Permission::ReadAudit));
        assert!(!allows(Role::Manager, Permission::Debug));
    }

    #[test]
    fn nobody_changes_their_own_role_and_managers_only_manage_reps() {
        let admin = Actor {
            id: Uuid::new_v4(),
            role: Role::Admin,
        };
        let manager = Actor {
            id: Uuid::new_v4(),
            role: Role::Manager,
        };
        assert!(!may_manage_user(
            &admin,
            Some(admin.id),
            Role::Admin,
            Some(Role::Manager)
        ));
        assert!(may_manage_user(&admin, Some(admin.id), Role::Admin, None));
        assert!(!may_manage_user(
            &manager,
            Some(manager.id),
            Role::Manager,
            Some(Role::Admin)
        ));
        assert!(may_manage_user(
            &manager,
            Some(Uuid::new_v4()),
            Role::SalesRep,
            None
        ));
        assert!(!may_manage_user(
            &manager,
            Some(Uuid::new_v4()),
            Role::SalesRep,
            Some(Role::Manager)
        ));
        assert!(!may_manage_user(
            &manager,
            Some(Uuid::new_v4()),
            Role::Admin,
            None
        ));
    }

    #[test]
    fn reps_see_only_their_own_leads() {
        let rep = Actor {
            id: Uuid::new_v4(),
            role: Role::SalesRep,
        };
        assert_eq!(LeadScope::of(&rep), LeadScope::OwnedBy(rep.id));
        let manager = Actor {
            id: Uuid::new_v4(),
            role: Role::Manager,
        };
        assert_eq!(LeadScope::of(&manager).owner(), None);
    }
}
